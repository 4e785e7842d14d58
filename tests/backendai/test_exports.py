"""The export plumbing (``backendai.exports``) over every report the apps register: every
filter with every operation it takes, every order key, each answered with a CSV (never a
500), and the report list describing exactly what the CSV writes."""
from __future__ import annotations

import pytest

from backendai.exports import registry
from backendai.exports.request import _TEXT_OPS, Choice, Flag, Nested, Range, Text, UUIDs
from helpers import csv_rows

pytestmark = pytest.mark.django_db

SAMPLE_UUID = "6f1d3c9e-0b7a-4e43-9a57-3c2f6f0f8e21"


def samples(spec) -> list:
    """Valid values of every shape ``spec`` takes."""
    if isinstance(spec, Text):
        text = SAMPLE_UUID if spec.is_uuid else "ex"
        return [{op: [text, text.upper()] if op.endswith("in") or op == "in_" else text} for op in _TEXT_OPS]
    if isinstance(spec, Choice):
        return [[spec.choices[0] if spec.choices else "RUNNING"], list(spec.choices or ("PENDING", "NOPE"))]
    if isinstance(spec, Range):
        return [{"after": "2020-01-01T00:00:00Z"}, {"before": "2999-01-01"}, {"after": "2020-01-01", "before": "2999-01-01"}]
    if isinstance(spec, Flag):
        return [True, False]
    if isinstance(spec, UUIDs):
        return [{"equals": SAMPLE_UUID}, {"not_equals": SAMPLE_UUID}, {"in": [SAMPLE_UUID]}, {"not_in": [SAMPLE_UUID]}]
    if isinstance(spec, Nested):
        return [{name: value} for name, child in spec.specs.items() for value in samples(child)]
    raise AssertionError(f"no samples for {spec!r}")


def filter_cases():
    return [pytest.param(report.key, name, id=f"{report.key}-{name}")
            for report in registry.registered() for name in report.filters]


def test_the_apps_register_the_five_reports_of_client_26_and_the_usage_buckets():
    assert [report.key for report in registry.registered()] == [
        "users", "keypairs", "projects", "sessions", "audit-logs", "usage-buckets"]


@pytest.mark.parametrize("report,name", filter_cases())
def test_it_answers_every_operation_of_every_filter_with_a_csv(signed, superadmin, report, name):
    api, header = signed(superadmin), [column.name for column in registry.get(report).columns]
    for value in samples(registry.get(report).filters[name]):
        response = api.post(f"/export/{report}/csv", {"filter": {name: value}})
        assert response.status_code == 200, (value, response.content)
        assert csv_rows(response)[0] == header


@pytest.mark.parametrize("report", [r.key for r in registry.registered()])
def test_it_answers_every_order_key_of_every_report_with_a_csv(signed, superadmin, owner, report):
    api = signed(superadmin)
    for key in registry.get(report).orders:
        for direction in ("ASC", "desc"):
            response = api.post(f"/export/{report}/csv", {"order": [{"field": key, "direction": direction}]})
            assert response.status_code == 200, (key, response.content)
            assert len(csv_rows(response)) >= 1


@pytest.mark.parametrize("report", [r.key for r in registry.registered()])
def test_the_report_list_names_exactly_the_columns_the_csv_writes(signed, superadmin, report):
    described = signed(superadmin).get(f"/export/reports/{report}").json()["report"]
    rows = csv_rows(signed(superadmin).post(f"/export/{report}/csv", {}))
    assert rows[0] == [field["name"] for field in described["fields"]]
    keys = [field["key"] for field in described["fields"]]
    picked = csv_rows(signed(superadmin).post(f"/export/{report}/csv", {"fields": list(reversed(keys))}))
    assert picked[0] == list(reversed(rows[0]))
