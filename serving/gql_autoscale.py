"""The autoscaling part of ``/admin/gql``, with Backend.AI 25.x's names
(``backendai/api/graphql.py`` merges ``Query`` and ``Mutation`` into the schema):

* ``endpoint_auto_scaling_rule_nodes(endpoint: String!, filter, order, offset, before, after, first,
  last)``: a connection ``{count, edges {cursor, node}, pageInfo}`` of ``EndpointAutoScalingRuleNode``
  (graphene's relay shape: ``pageInfo {hasNextPage hasPreviousPage startCursor endCursor}``), and
  ``endpoint_auto_scaling_rule_node(id: String!)``;
* ``create_endpoint_auto_scaling_rule_node(endpoint: String!, props: EndpointAutoScalingRuleInput!)``,
  ``modify_endpoint_auto_scaling_rule_node(id: String!, props: ModifyEndpointAutoScalingRuleInput!)``
  → ``{ok, msg, rule}``; ``delete_endpoint_auto_scaling_rule_node(id: String!)`` → ``{ok, msg}``.

``metric_source`` is ``KERNEL`` or ``INFERENCE_FRAMEWORK`` (the app proxy's request figures:
``proxy`` in the REST API), ``comparator`` ``LESS_THAN``, ``LESS_THAN_OR_EQUAL``, ``GREATER_THAN``
or ``GREATER_THAN_OR_EQUAL``; ``threshold`` is a decimal string as in Backend.AI.  A node's ``id``
is the relay global id (base64 of ``EndpointAutoScalingRuleNode:<uuid>``); ``row_id`` is the UUID;
mutations take either.  Validation and permissions are ``serving.services.autoscale``'s: a refusal
is the API's problem (400/404) and changes nothing."""
from __future__ import annotations

import base64
import binascii
import enum
import uuid
from typing import Optional

import strawberry
from strawberry.types import Info

from backendai.api import errors, gqlkit
from backendai.api.gqlkit import iso_or_none
from serving.models import AutoScalingRule
from serving.services import autoscale

NODE_TYPE = "EndpointAutoScalingRuleNode"


@strawberry.enum
class AutoScalingMetricSource(enum.Enum):
    KERNEL = "KERNEL"
    INFERENCE_FRAMEWORK = "INFERENCE_FRAMEWORK"


@strawberry.enum
class AutoScalingMetricComparator(enum.Enum):
    LESS_THAN = "LESS_THAN"
    LESS_THAN_OR_EQUAL = "LESS_THAN_OR_EQUAL"
    GREATER_THAN = "GREATER_THAN"
    GREATER_THAN_OR_EQUAL = "GREATER_THAN_OR_EQUAL"


@strawberry.type
class EndpointAutoScalingRuleNode:
    id: strawberry.ID
    row_id: uuid.UUID
    endpoint: uuid.UUID
    metric_source: AutoScalingMetricSource
    metric_name: str
    threshold: str
    comparator: AutoScalingMetricComparator
    step_size: int
    cooldown_seconds: int
    min_replicas: Optional[int]
    max_replicas: Optional[int]
    window_seconds: int
    enabled: bool
    last_value: Optional[float]
    created_at: Optional[str]
    last_triggered_at: Optional[str]


@strawberry.type
class EndpointAutoScalingRuleEdge:
    cursor: str
    node: EndpointAutoScalingRuleNode


@strawberry.type
class PageInfo:
    """graphene's relay ``PageInfo`` (camelCase, as Backend.AI answers it)."""

    has_next_page: bool = strawberry.field(name="hasNextPage")
    has_previous_page: bool = strawberry.field(name="hasPreviousPage")
    start_cursor: Optional[str] = strawberry.field(name="startCursor")
    end_cursor: Optional[str] = strawberry.field(name="endCursor")


@strawberry.type
class EndpointAutoScalingRuleConnection:
    count: int
    edges: list[EndpointAutoScalingRuleEdge]
    page_info: PageInfo = strawberry.field(name="pageInfo")


def global_id(rule_id) -> str:
    return base64.b64encode(f"{NODE_TYPE}:{rule_id}".encode()).decode()


def _rule_id(value: str) -> str:
    """A rule's UUID from its global id or its UUID."""
    if not isinstance(value, str) or len(value) > 128:
        raise errors.InvalidAPIParameters("id: expected a rule id")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        pass
    try:
        kind, _, raw = base64.b64decode(value, validate=True).decode().partition(":")
        if kind == NODE_TYPE:
            return str(uuid.UUID(raw))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise errors.InvalidAPIParameters("id: expected a rule id (its UUID or global id)")


def _threshold_text(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def node(rule: AutoScalingRule) -> EndpointAutoScalingRuleNode:
    return EndpointAutoScalingRuleNode(
        id=strawberry.ID(global_id(rule.pk)), row_id=rule.pk, endpoint=rule.endpoint_id,
        metric_source=AutoScalingMetricSource(autoscale.SOURCE_ENUM[rule.metric_source]),
        metric_name=rule.metric_name, threshold=_threshold_text(rule.threshold),
        comparator=AutoScalingMetricComparator(autoscale.COMPARATOR_ENUM[rule.comparator]),
        step_size=rule.step_size, cooldown_seconds=rule.cooldown_seconds, min_replicas=rule.min_replicas,
        max_replicas=rule.max_replicas, window_seconds=rule.window_seconds, enabled=rule.enabled,
        last_value=rule.last_value, created_at=iso_or_none(rule.created_at),
        last_triggered_at=iso_or_none(rule.last_triggered_at))


@strawberry.input
class EndpointAutoScalingRuleInput:
    metric_source: AutoScalingMetricSource
    metric_name: str
    threshold: str
    comparator: AutoScalingMetricComparator
    step_size: int
    cooldown_seconds: int
    min_replicas: Optional[int] = None
    max_replicas: Optional[int] = None
    window_seconds: Optional[int] = None
    enabled: Optional[bool] = None


@strawberry.input
class ModifyEndpointAutoScalingRuleInput:
    metric_source: Optional[AutoScalingMetricSource] = strawberry.UNSET
    metric_name: Optional[str] = strawberry.UNSET
    threshold: Optional[str] = strawberry.UNSET
    comparator: Optional[AutoScalingMetricComparator] = strawberry.UNSET
    step_size: Optional[int] = strawberry.UNSET
    cooldown_seconds: Optional[int] = strawberry.UNSET
    min_replicas: Optional[int] = strawberry.UNSET
    max_replicas: Optional[int] = strawberry.UNSET
    window_seconds: Optional[int] = strawberry.UNSET
    enabled: Optional[bool] = strawberry.UNSET


#: fields whose null means "none" (no bound); a null elsewhere is refused by the service
NULLABLE = ("min_replicas", "max_replicas")


def _props(props, *, partial: bool) -> dict:
    """The input as the service's dict: enums by value, unset fields left out (on create,
    the optional fields left null take the defaults)."""
    result = {}
    for name in autoscale.FIELDS:
        value = getattr(props, name, strawberry.UNSET)
        if value is strawberry.UNSET or (value is None and not partial and name not in NULLABLE):
            continue
        result[name] = value.value if isinstance(value, enum.Enum) else value
    return result


@strawberry.type
class CreateEndpointAutoScalingRuleNode:
    ok: bool
    msg: str
    rule: Optional[EndpointAutoScalingRuleNode]


@strawberry.type
class ModifyEndpointAutoScalingRuleNode:
    ok: bool
    msg: str
    rule: Optional[EndpointAutoScalingRuleNode]


@strawberry.type
class DeleteEndpointAutoScalingRuleNode:
    ok: bool
    msg: str


def _endpoint_ref(value: str) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise errors.InvalidAPIParameters("endpoint: expected the endpoint's id")
    return value


#: the fields of ``filter`` and ``order`` (Backend.AI's small expression language, ``gqlkit``)
RULE_FIELDS = {"metric_source": "metric_source", "metric_name": "metric_name", "comparator": "comparator",
               "created_at": "created_at", "last_triggered_at": "last_triggered_at", "threshold": "threshold",
               "step_size": "step_size"}


def _position(rules: list, cursor: Optional[str], name: str) -> Optional[int]:
    if cursor is None:
        return None
    wanted = _rule_id(cursor)
    for index, rule in enumerate(rules):
        if str(rule.pk) == wanted:
            return index
    raise errors.InvalidAPIParameters(f"{name}: no such cursor in this list")


def connection(rules: list, *, first=None, last=None, offset=None, after=None, before=None
               ) -> EndpointAutoScalingRuleConnection:
    """A relay page of ``rules`` (graphene's semantics: after/before cursors, then offset, then
    first/last); ``count`` is the whole list's length."""
    for name, value in (("first", first), ("last", last), ("offset", offset)):
        if value is not None and value < 0:
            raise errors.InvalidAPIParameters(f"{name}: must be >= 0")
    low, high = 0, len(rules)
    after_at, before_at = _position(rules, after, "after"), _position(rules, before, "before")
    if after_at is not None:
        low = after_at + 1
    if before_at is not None:
        high = min(high, before_at)
    low = min(high, low + (offset or 0))
    if first is not None:
        high = min(high, low + first)
    if last is not None:
        low = max(low, high - last)
    window = rules[low:high] if low < high else []
    edges = [EndpointAutoScalingRuleEdge(cursor=global_id(r.pk), node=node(r)) for r in window]
    return EndpointAutoScalingRuleConnection(
        count=len(rules), edges=edges,
        page_info=PageInfo(has_next_page=high < len(rules), has_previous_page=low > 0,
                           start_cursor=edges[0].cursor if edges else None,
                           end_cursor=edges[-1].cursor if edges else None))


@strawberry.type
class Query:
    @strawberry.field
    def endpoint_auto_scaling_rule_node(self, info: Info, id: str) -> Optional[EndpointAutoScalingRuleNode]:
        user, _ = gqlkit.actor(info)
        return node(autoscale.get_rule(user, _rule_id(id)))

    @strawberry.field
    def endpoint_auto_scaling_rule_nodes(self, info: Info, endpoint: str, filter: Optional[str] = None,
                                         order: Optional[str] = None, offset: Optional[int] = None,
                                         before: Optional[str] = None, after: Optional[str] = None,
                                         first: Optional[int] = None,
                                         last: Optional[int] = None) -> EndpointAutoScalingRuleConnection:
        user, _ = gqlkit.actor(info)
        query = autoscale.rules_of(user, _endpoint_ref(endpoint))
        query = gqlkit.apply_filter(query, filter, RULE_FIELDS)
        query = gqlkit.apply_order(query, order, RULE_FIELDS, "created_at")
        rules = list(query)  # at most MAX_RULES_PER_ENDPOINT
        return connection(rules, first=first, last=last, offset=offset, after=after, before=before)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def create_endpoint_auto_scaling_rule_node(self, info: Info, endpoint: str,
                                               props: EndpointAutoScalingRuleInput
                                               ) -> CreateEndpointAutoScalingRuleNode:
        user, _ = gqlkit.actor(info)
        rule = autoscale.create_rule(user, _endpoint_ref(endpoint), _props(props, partial=False))
        return CreateEndpointAutoScalingRuleNode(ok=True, msg="", rule=node(rule))

    @strawberry.mutation
    def modify_endpoint_auto_scaling_rule_node(self, info: Info, id: str,
                                               props: ModifyEndpointAutoScalingRuleInput
                                               ) -> ModifyEndpointAutoScalingRuleNode:
        user, _ = gqlkit.actor(info)
        rule = autoscale.modify_rule(user, _rule_id(id), _props(props, partial=True))
        return ModifyEndpointAutoScalingRuleNode(ok=True, msg="", rule=node(rule))

    @strawberry.mutation
    def delete_endpoint_auto_scaling_rule_node(self, info: Info, id: str) -> DeleteEndpointAutoScalingRuleNode:
        user, _ = gqlkit.actor(info)
        autoscale.delete_rule(user, _rule_id(id))
        return DeleteEndpointAutoScalingRuleNode(ok=True, msg="")
