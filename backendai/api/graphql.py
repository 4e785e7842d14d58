"""``POST /admin/gql``: the GraphQL documents the official client sends
(client-wire.md §8) — keypair, compute_session_list, compute_session,
agent_list, images, vfolder_list — answered by strawberry over our services.

This module only assembles the schema: each app owns its types and root fields
in ``<app>/gql.py`` (``accounts``: keypair; ``sessions``: compute sessions;
``agents``: agents and images; ``vfolders``: folders; ``serving``: model
serving endpoints and routes, ``serving/gql_autoscale.py`` their autoscaling rules),
and the shared plumbing
(cost limits, converters, filters, paging, error masking) is
``backendai/api/gqlkit.py``.

Field names are snake_case as in Backend.AI; JSON-valued fields are
JSON-encoded strings (the client's formatters ``json.loads`` them); enums are
upper case; pagination is consistent (``total_count`` counts what the same
filter returns).

Secrets: ``secret_key`` stays in the schema (the client asks for it) but always
answers ``accounts.services.MASKED_SECRET``; agent addresses and ids are shown
to superadmins only."""
from __future__ import annotations

import strawberry
from rest_framework.response import Response
from rest_framework.views import APIView
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from accounts import gql as accounts_gql
from agents import gql as agents_gql
from backendai import audit_gql
from backendai.api import errors
from backendai.api.gql_metrics import GraphQLMetrics
from backendai.api.gqlkit import SCALARS, CachedParse, CachedValidation, CostLimits, public_error
from serving import gql as serving_gql
from serving import gql_autoscale as serving_autoscale_gql
from sessions import gql as sessions_gql
from vfolders import gql as vfolders_gql

# The tuple order is the field order of the root type (the SDL the client sees).
_APPS = (accounts_gql, sessions_gql, agents_gql, vfolders_gql, serving_gql, serving_autoscale_gql, audit_gql)
Query = merge_types("Query", tuple(app.Query for app in _APPS))
# Each app's mutations (Backend.AI's names: create_user, modify_keypair, ...), where it has any.
_MUTATIONS = tuple(app.Mutation for app in _APPS if getattr(app, "Mutation", None) is not None)
Mutation = merge_types("Mutation", _MUTATIONS) if _MUTATIONS else None

schema = strawberry.Schema(query=Query, mutation=Mutation,
                           config=StrawberryConfig(auto_camel_case=False, scalar_map=SCALARS),
                           extensions=[CostLimits, CachedParse, CachedValidation, GraphQLMetrics])


class GraphQLView(APIView):
    """Signed GraphQL endpoint; answers ``{"data": ..., "errors"?: [...]}`` (legacy
    ``/admin/graphql`` answers the data without the envelope)."""

    legacy = False

    def post(self, request):
        body = request.data if isinstance(request.data, dict) else {}
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise errors.InvalidAPIParameters("query is required")
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            raise errors.InvalidAPIParameters("variables must be an object")
        result = schema.execute_sync(query, variable_values=variables, context_value={"request": request},
                                     operation_name=body.get("operationName"))
        if result.errors:
            first = result.errors[0]
            original = getattr(first, "original_error", None)
            if isinstance(original, errors.BackendAIError):
                raise original
            shown = [public_error(e) for e in result.errors]
            return errors.problem_response(400, "graphql-error", "GraphQL-generated error.",
                                           "; ".join(e["message"] for e in shown), shown)
        if self.legacy:
            return Response(result.data)
        return Response({"data": result.data})


class LegacyGraphQLView(GraphQLView):
    legacy = True


__all__ = ["schema", "GraphQLView", "LegacyGraphQLView"]
