"""GraphQL plumbing shared by the apps' ``<app>/gql.py`` modules and the schema
assembly in ``backendai/api/graphql.py``.  It imports no app: the apps import it,
and it must never lead back to the composition root.

Cost limits (``CostLimits``, checked before any resolver runs): query text of at
most ``MAX_QUERY_CHARS`` characters and ``MAX_TOKENS`` tokens, at most
``MAX_NODES`` fields and fragment spreads once every fragment is expanded, no
fragment cycles, depth ``settings.GRAPHQL_MAX_DEPTH`` (strawberry's
``QueryDepthLimiter``), ``settings.GRAPHQL_MAX_ALIASES`` aliases across the
document including fragments (strawberry's alias rule), and ``limit``/``first``
arguments of at most ``settings.GRAPHQL_MAX_LIST_SIZE``.

Also here: the JSON-string and ISO-timestamp converters of the wire format, the
small filter/order language of the session and agent lists, paging, the caller
(``actor``) and the masking of unexpected resolver errors (``public_error``)."""
from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable
from typing import NewType, Optional

import strawberry
from django.conf import settings
from graphql import GraphQLError
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)
from strawberry.extensions import ParserCache, SchemaExtension, ValidationCache
from strawberry.extensions.max_aliases import create_validator as alias_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.types import Info

from backendai.api import errors

MAX_LIMIT = 100  # one page; larger limits (up to GRAPHQL_MAX_LIST_SIZE) are served 100 at a time
MAX_QUERY_CHARS = 16 * 1024
MAX_TOKENS = 2000
MAX_NODES = 500  # fields + fragment spreads after expanding fragments (the full introspection query is ~230)
LIST_ARGUMENTS = ("limit", "first", "last")


# --- cost limits ------------------------------------------------------------------------------

def _expanded_size(document: DocumentNode) -> list[str]:
    """Problems with the shape of ``document``: unknown or cyclic fragments, or more
    than ``MAX_NODES`` nodes once fragments are expanded.  Each fragment is sized
    once (memoised), so a fragment that spreads another twice, many levels deep,
    costs linear time here however large its expansion would be."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    sizes: dict[str, int] = {}
    visiting: set[str] = set()
    problems: list[str] = []

    def fragment_size(name: str) -> int:
        if name in sizes:
            return sizes[name]
        if name not in fragments:
            raise ValueError(f"Unknown fragment {name!r}.")
        if name in visiting:
            raise ValueError(f"Fragment {name!r} spreads itself (a fragment cycle).")
        visiting.add(name)
        sizes[name] = selection_size(fragments[name].selection_set)
        visiting.discard(name)
        return sizes[name]

    def selection_size(selection_set: SelectionSetNode | None) -> int:
        total = 0
        for selection in (selection_set.selections if selection_set else ()):
            if isinstance(selection, FieldNode):
                total += 1 + selection_size(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                total += selection_size(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += 1 + fragment_size(selection.name.value)
        return total

    try:
        for name in fragments:
            fragment_size(name)
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                size = selection_size(definition.selection_set)
                if size > MAX_NODES:
                    problems.append(f"The query selects {size} fields once fragments are expanded. "
                                    f"Allowed: {MAX_NODES}.")
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def _list_size_problems(document: DocumentNode, variables: dict) -> list[str]:
    """``limit``/``first``/``last`` arguments above ``GRAPHQL_MAX_LIST_SIZE``, literal or variable."""
    limit, problems = settings.GRAPHQL_MAX_LIST_SIZE, []

    def visit(selection_set: SelectionSetNode | None):
        for selection in (selection_set.selections if selection_set else ()):
            if isinstance(selection, FieldNode):
                for argument in selection.arguments or ():
                    if argument.name.value not in LIST_ARGUMENTS:
                        continue
                    value = argument.value
                    if isinstance(value, IntValueNode):
                        number = int(value.value)
                    elif isinstance(value, VariableNode):
                        number = variables.get(value.name.value)
                    else:
                        continue
                    if isinstance(number, int) and not isinstance(number, bool) and number > limit:
                        problems.append(f"{selection.name.value}: {argument.name.value} {number} is over the "
                                        f"maximum list size {limit}.")
                visit(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                visit(selection.selection_set)

    for definition in document.definitions:
        if isinstance(definition, (OperationDefinitionNode, FragmentDefinitionNode)):
            visit(definition.selection_set)
    return problems


class CostLimits(SchemaExtension):
    """Refuse an over-cost document before validation's heavier rules and before any
    resolver: the checks above first (cheap, and they make the rest bounded), then
    strawberry's depth limiter and alias counter as validation rules."""

    def on_operation(self):
        context = self.execution_context
        context.parse_options["max_tokens"] = MAX_TOKENS
        context.validation_rules = context.validation_rules + (
            _depth_rule(settings.GRAPHQL_MAX_DEPTH), _alias_rule(settings.GRAPHQL_MAX_ALIASES))
        yield

    def on_parse(self):
        query = self.execution_context.query or ""
        if len(query) > MAX_QUERY_CHARS:
            raise GraphQLError(f"The query is {len(query)} characters long. Allowed: {MAX_QUERY_CHARS}.")
        yield

    def on_validate(self):
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            problems = _expanded_size(document) or _list_size_problems(document, context.variables or {})
            if problems:
                # strawberry skips its own validation when errors are already set
                context.pre_execution_errors = [GraphQLError(p) for p in problems]
        yield


# The rule classes are made once per limit: the same classes on every request keep the validation
# rules, and so the cached validation of a document, the same from one request to the next.
_depth_rule = functools.lru_cache(maxsize=16)(lambda depth: depth_rule(depth, None))
_alias_rule = functools.lru_cache(maxsize=16)(alias_rule)


class CachedParse(ParserCache):
    """strawberry's parse cache (128 query texts, LRU): clients send the same few documents on every
    call, and parsing one of them cost more than running it.  After ``CostLimits`` in the schema's
    extensions, so an over-long text is refused before it is parsed or cached."""


class CachedValidation(ValidationCache):
    """strawberry's validation cache (128 documents, LRU; a document's validity depends only on the
    schema, the document and the rules), except that a document ``CostLimits`` already refused keeps
    its refusal (strawberry's own class would overwrite it with the validation's answer)."""

    def on_validate(self):
        if self.execution_context.pre_execution_errors:
            yield
            return
        yield from super().on_validate()


# --- wire values, lists, the caller -----------------------------------------------------------

def _big_int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"BigInt takes an integer, not {value!r}")
    return int(value)


#: Backend.AI's ``BigInt``: an integer of any size (bytes, counts), where GraphQL's ``Int`` stops
#: at 2**31.  One definition for every app (two scalars of one name break the schema); the schema
#: learns how to read and write it from ``SCALARS``.
BigInt = NewType("BigInt", int)


def _json_input(value):
    """A JSONString input: the JSON-encoded text, decoded (an already decoded value is taken as is)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value) if value.strip() else None
    except (ValueError, RecursionError):
        raise ValueError("JSONString takes JSON-encoded text") from None


#: Backend.AI's ``JSONString``: a JSON document sent as a string (``resource_slots: "{\"cpu\": \"2\"}"``).
#: Inputs arrive decoded (services check their shape); one definition for every app, like ``BigInt``.
JSONString = NewType("JSONString", object)

#: The custom scalars, for ``StrawberryConfig(scalar_map=...)`` of the schema.
SCALARS = {
    BigInt: strawberry.scalar(name="BigInt", serialize=int, parse_value=_big_int,
                              description="An integer of any size (Int stops at 2**31)."),
    JSONString: strawberry.scalar(name="JSONString", serialize=json.dumps, parse_value=_json_input,
                                  description="A JSON document encoded as a string."),
}


def json_or_none(value) -> Optional[str]:
    """A JSON-valued field: the value JSON-encoded (the client ``json.loads`` it), or null."""
    return None if value is None else json.dumps(value)


def iso_or_none(value) -> Optional[str]:
    return value.isoformat() if value else None


FILTER_RE = re.compile(r'^\s*(\w+)\s*(==|!=|ilike|like)\s*"([^"]*)"\s*$')


def apply_filter(query, expression: Optional[str], fields: dict[str, str]):
    """A small subset of Backend.AI's filter language: ``field op "value"`` joined by ``&``."""
    if not expression:
        return query
    for part in expression.split("&"):
        match = FILTER_RE.match(part)
        if not match or match.group(1) not in fields:
            raise errors.InvalidAPIParameters(f"Unsupported filter expression: {part.strip()!r}")
        column, op, value = fields[match.group(1)], match.group(2), match.group(3)
        if op in ("ilike", "like"):
            lookup = "icontains" if op == "ilike" else "contains"
            query = query.filter(**{f"{column}__{lookup}": value.strip("%")})
        elif op == "==":
            query = query.filter(**{column: value})
        else:
            query = query.exclude(**{column: value})
    return query


def apply_order(query, order: Optional[str], fields: dict[str, str], default: str):
    if not order:
        return query.order_by(default)
    name = order.lstrip("+-")
    if name not in fields:
        raise errors.InvalidAPIParameters(f"Unsupported order field: {name!r}")
    return query.order_by(("-" if order.startswith("-") else "") + fields[name])


def page(limit: int, offset: int) -> tuple[int, int]:
    if limit < 0 or offset < 0:
        raise errors.InvalidAPIParameters("limit and offset must be >= 0")
    if limit > settings.GRAPHQL_MAX_LIST_SIZE:
        raise errors.InvalidAPIParameters(f"limit: at most {settings.GRAPHQL_MAX_LIST_SIZE}")
    return min(limit, MAX_LIMIT), offset


def actor(info: Info):
    """The signed caller of a resolver: ``(user, keypair)``."""
    return info.context["request"].user, info.context["request"].auth


def public_error(error: GraphQLError) -> dict:
    """An error as the caller sees it: a resolver's unexpected exception (a database
    error, a bug) is not echoed back, only that it happened (the log has it)."""
    original = getattr(error, "original_error", None)
    if original is None or isinstance(original, (GraphQLError, errors.BackendAIError)):
        return error.formatted
    return {"message": "Internal error while resolving this field.", "path": error.path,
            "locations": error.formatted.get("locations")}


# --- families of mutations --------------------------------------------------------------------

def typed_mutation(body: Callable, arguments: dict[str, object], returns: object):
    """A mutation with the GraphQL ``arguments`` (name -> type, in order) answering ``returns``,
    run as ``body(info, **arguments)``: for families of mutations that differ only in names and
    types (the scaling group associations, the three kinds of resource policy).  Strawberry
    reads a resolver's arguments from its signature, which is set here."""
    def resolve(self, info: Info, **given):
        return body(info, **given)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    resolve.__signature__ = inspect.Signature(
        [inspect.Parameter("self", kind), inspect.Parameter("info", kind, annotation=Info)]
        + [inspect.Parameter(name, kind, annotation=annotation) for name, annotation in arguments.items()],
        return_annotation=returns)
    return strawberry.mutation(resolver=resolve)
