"""The usage API's OpenAPI description (drf-spectacular): every usage view documents its
parameters, its answer and its problem+json failures, and describing them warns of nothing."""
from __future__ import annotations

import pytest
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator

USAGE_VIEWS = ("UsageMonthView", "UsagePeriodView", "RecalculateUsageView", "UsageStatsView", "UserMonthStatsView",
               "AdminMonthStatsView", "UsageBucketSearchView")


@pytest.fixture(scope="module")
def generated():
    GENERATOR_STATS.reset()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    complaints = [*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache]
    return schema, complaints


def test_it_describes_the_usage_views_without_a_warning_or_an_error(generated):
    _, complaints = generated
    about_usage = [c for c in complaints if any(f"[{view}]" in c or f"[{view} " in c for view in USAGE_VIEWS)]
    assert about_usage == []
    assert not [c for c in complaints if "Problem" in c]  # one Problem component, not one per view


def test_the_stats_view_documents_its_query_parameters_and_answer(generated):
    schema, _ = generated
    operation = schema["paths"]["/resource/stats"]["get"]
    names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert {"start", "end", "granularity", "group_by", "mine", "project_id", "user_id", "resource_group"} <= names
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][answer.rsplit("/", 1)[1]]
    assert {"start", "end", "granularity", "buckets", "totals", "units"} <= set(component["properties"])


@pytest.mark.parametrize("path, method, failures", [
    ("/resource/stats", "get", {"400", "401"}),
    ("/resource/stats/user/month", "get", {"401"}),
    ("/resource/stats/admin/month", "get", {"401", "403"}),
    ("/resource/usage/month", "get", {"400", "401", "403"}),
    ("/resource/usage/period", "get", {"400", "401", "403"}),
    ("/fair-share/usage-buckets/{level}/search", "post", {"400", "401", "403", "404"}),
])
def test_each_usage_view_documents_its_failures_as_problem_json(generated, path, method, failures):
    schema, _ = generated
    responses = schema["paths"][path][method]["responses"]
    assert failures <= set(responses)
    for status in failures:
        body = responses[status]["content"]["application/problem+json"]["schema"]
        assert body == {"$ref": "#/components/schemas/Problem"}
    assert {"type", "title"} <= set(schema["components"]["schemas"]["Problem"]["required"])


def test_the_bucket_search_documents_its_levels_and_its_body(generated):
    schema, _ = generated
    operation = schema["paths"]["/fair-share/usage-buckets/{level}/search"]["post"]
    level = next(p for p in operation["parameters"] if p["name"] == "level")
    assert level["in"] == "path" and level["schema"]["enum"] == ["domains", "projects", "users"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"filter", "order", "limit", "offset"} <= set(schema["components"]["schemas"][body]["properties"])
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][answer]["properties"]) == {"items", "pagination"}
