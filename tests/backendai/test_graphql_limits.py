"""GraphQL cost limits: depth, aliases (also inside fragments), list sizes, fragment
cycles and bombs, huge documents.  An over-cost document is refused with a GraphQL
error before any resolver runs (no SQL at all), the client's own documents and
introspection still pass."""
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from graphql import get_introspection_query
from helpers import CLIENT_PS_DOCUMENT, slug

from backendai.api import graphql

pytestmark = pytest.mark.django_db

# client-wire.md §8, exactly as backend.ai-client 23.9.10 sends them
KEYPAIR = "query {  keypair {    user_id access_key secret_key is_active is_admin  }}"
PS = CLIENT_PS_DOCUMENT
INFO = ("query($id: UUID!) {  compute_session(id: $id) {    name id main_kernel_id image tag created_at terminated_at "
        "status status_info status_data occupying_slots idle_checks containers { id cluster_role cluster_idx "
        "cluster_hostname session_id image registry status status_info status_data status_changed agent container_id "
        "resource_opts occupied_slots preopen_ports live_stat last_stat id } dependencies { name id }  }}")
VFOLDERS = """query($limit:Int!, $offset:Int!, $group_id: UUID, $filter: String, $order: String) {
  vfolder_list(
      limit:$limit, offset:$offset, group_id:$group_id, filter:$filter, order:$order) {
    items { host name status created_at creator group permission ownership_type status }
    total_count
  }
}"""
AGENTS = """query($limit:Int!, $offset:Int!, $status: String, $scaling_group: String, $filter: String, $order: String) {
  agent_list(
      limit:$limit, offset:$offset, status:$status, scaling_group:$scaling_group, filter:$filter, order:$order) {
    items { id status architecture scaling_group region first_contact cpu_cur_pct mem_cur_bytes available_slots occupied_slots }
    total_count
  }
}"""
PAGE = {"limit": 20, "offset": 0, "status": None, "filter": None, "order": None}


def execute(user, query, variables=None):
    """Run a document as ``user`` straight through the schema, counting SQL statements."""
    request = SimpleNamespace(user=user, auth=user.main_keypair)
    with CaptureQueriesContext(connection) as queries:
        result = graphql.schema.execute_sync(query, variable_values=variables or {}, context_value={"request": request})
    return result, len(queries)


def refused(user, query, variables=None, mentions=""):
    result, statements = execute(user, query, variables)
    assert result.errors, result.data
    assert result.data is None
    assert statements == 0, "a refused document must not reach any resolver"
    assert mentions.lower() in " ".join(e.message for e in result.errors).lower()
    return result


@pytest.mark.parametrize("document, variables", [
    (KEYPAIR, {}), (PS, {**PAGE, "access_key": None}), (INFO, {"id": "00000000-0000-0000-0000-000000000000"}),
    (VFOLDERS, {"limit": 20, "offset": 0, "group_id": None, "filter": None, "order": None}),
    (AGENTS, {**PAGE, "scaling_group": None, "status": "ALIVE"}),
])
def test_the_official_clients_documents_pass_the_limits(superadmin, document, variables):
    result, statements = execute(superadmin, document, variables)
    assert not result.errors, result.errors
    assert statements > 0


def test_introspection_stays_allowed(owner):
    result, _ = execute(owner, get_introspection_query(descriptions=True))
    assert not result.errors, result.errors
    assert result.data["__schema"]["queryType"]["name"] == "Query"


def test_it_refuses_a_query_deeper_than_the_limit_without_running_resolvers(owner, settings):
    # our schema is shallow (three levels at most), so the limit is lowered to reach it
    settings.GRAPHQL_MAX_DEPTH = 2
    result, _ = execute(owner, "query { compute_session_list(limit: 1, offset: 0) { items { name } } }")
    assert not result.errors, result.errors
    refused(owner, "query { compute_session_list(limit: 1, offset: 0) { items { containers { id } } } }",
            mentions="depth")
    refused(owner, """query { compute_session_list(limit: 1, offset: 0) { ...L } }
                      fragment L on ComputeSessionList { items { containers { id } } }""", mentions="depth")


def test_it_refuses_an_alias_bomb_without_running_resolvers(owner, settings):
    settings.GRAPHQL_MAX_ALIASES = 5
    ok = "query { " + " ".join(f"k{i}: keypair {{ access_key }}" for i in range(5)) + " }"
    result, _ = execute(owner, ok)
    assert not result.errors and len(result.data) == 5
    refused(owner, "query { " + " ".join(f"k{i}: keypair {{ access_key }}" for i in range(6)) + " }",
            mentions="aliases")


def test_aliases_inside_fragments_count_each_time_the_fragment_is_spread(owner, settings):
    settings.GRAPHQL_MAX_ALIASES = 5
    document = """query { a: keypair { ...K } b: keypair { ...K } }
                  fragment K on KeyPair { x: access_key y: user_id }"""  # 2 + 2 x 2 = 6 aliases
    refused(owner, document, mentions="aliases")


def test_it_refuses_a_limit_over_the_maximum_list_size_literal_or_variable(owner, settings):
    settings.GRAPHQL_MAX_LIST_SIZE = 50
    refused(owner, "query { vfolder_list(limit: 51, offset: 0) { total_count } }", mentions="maximum list size")
    refused(owner, VFOLDERS, {"limit": 51, "offset": 0}, mentions="maximum list size")
    result, _ = execute(owner, VFOLDERS, {"limit": 50, "offset": 0})
    assert not result.errors, result.errors


def test_a_limit_over_the_maximum_is_refused_by_the_resolver_too_when_it_cannot_be_seen_early(owner, settings):
    settings.GRAPHQL_MAX_LIST_SIZE = 50
    # a default value is invisible to the document check; the resolver still refuses it
    result, _ = execute(owner, "query($n: Int! = 51) { vfolder_list(limit: $n, offset: 0) { total_count } }")
    assert result.errors and "limit" in result.errors[0].message


def test_it_refuses_fragment_cycles_cheaply(owner):
    refused(owner, """query { keypair { ...A } }
                      fragment A on KeyPair { access_key ...B }
                      fragment B on KeyPair { user_id ...A }""", mentions="cycle")


def test_it_refuses_a_fragment_bomb_before_expanding_it(owner):
    # each fragment spreads the next twice: 2**40 fields once expanded, a few hundred characters here
    levels = 40
    fragments = [f"fragment F{i} on KeyPair {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)]
    fragments.append(f"fragment F{levels} on KeyPair {{ access_key }}")
    refused(owner, "query { keypair { ...F0 } }\n" + "\n".join(fragments), mentions="fields")


def test_it_refuses_an_unknown_fragment_with_an_error_not_a_crash(owner):
    refused(owner, "query { keypair { ...Missing } }", mentions="fragment")


def test_it_refuses_hundreds_of_fields(owner):
    document = "query { keypair { " + " ".join(["access_key"] * 600) + " } }"
    refused(owner, document, mentions="fields")


def test_it_refuses_huge_documents_before_parsing_them(owner):
    refused(owner, "query { keypair { access_key } }" + " " * 20000 + "#", mentions="characters")
    many = "query { keypair { " + "a " * 2500 + " } }"  # 5 KB, but 2,500 tokens
    refused(owner, many, mentions="token")


def test_an_over_cost_query_is_a_graphql_error_on_the_wire(signed, owner, settings):
    settings.GRAPHQL_MAX_ALIASES = 2
    document = "query { a: keypair { access_key } b: keypair { access_key } c: keypair { access_key } }"
    response = signed(owner).post("/admin/gql", {"query": document, "variables": {}})
    assert response.status_code == 400
    assert slug(response) == "graphql-error"
