"""``backendai_graphql_request_count`` / ``backendai_graphql_request_duration_sec``: a strawberry
extension on the schema (``backendai.api.graphql``).

One sample per top-level field of the executed operation, labelled ``operation_type`` (``query``,
``mutation``), ``field_name`` (the schema's field, not the client's alias), ``success`` and
``error_detail`` (the problem slug of the ``BackendAIError`` the field raised, else the exception's
class name, else ``graphql-error``); the duration is the operation's.  A document refused before
execution (it does not parse, does not validate, is over its cost) is one sample with
``field_name=""`` and ``error_detail`` ``parse-error`` or ``validation-error``: its field names are
the client's words, never labels.  Nothing here raises into the operation.
"""
from __future__ import annotations

import time

from graphql.language import FieldNode, FragmentSpreadNode, InlineFragmentNode, OperationDefinitionNode
from strawberry.extensions import SchemaExtension

from backendai import telemetry


def _root_fields(document, operation_name: str | None) -> dict[str, str]:
    """Response key (alias or name) -> field name of the executed operation's top-level fields."""
    fragments = {d.name.value: d for d in document.definitions if d.kind == "fragment_definition"}
    operation = None
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            if operation_name is None or (definition.name and definition.name.value == operation_name):
                operation = definition
                break
    fields: dict[str, str] = {}
    if operation is None:
        return fields
    pending = list(operation.selection_set.selections)
    seen_fragments: set[str] = set()
    while pending:
        node = pending.pop(0)
        if isinstance(node, FieldNode):
            key = node.alias.value if node.alias else node.name.value
            fields.setdefault(key, node.name.value)
        elif isinstance(node, InlineFragmentNode):
            pending.extend(node.selection_set.selections)
        elif isinstance(node, FragmentSpreadNode) and node.name.value not in seen_fragments:
            seen_fragments.add(node.name.value)
            fragment = fragments.get(node.name.value)
            if fragment is not None:
                pending.extend(fragment.selection_set.selections)
    return fields


def _detail(error) -> str:
    original = getattr(error, "original_error", None)
    if original is None:
        return "graphql-error"
    slug = getattr(original, "error_type", None)
    if isinstance(slug, str) and slug:
        return slug[:48]
    return type(original).__name__[:48]


class GraphQLMetrics(SchemaExtension):
    def on_operation(self):
        started = time.perf_counter()
        self._executed = False
        try:
            yield
        finally:
            self._record(time.perf_counter() - started)

    def on_execute(self):
        self._executed = True
        yield

    def _record(self, seconds: float) -> None:
        try:
            context = self.execution_context
            document = context.graphql_document
            if not self._executed or document is None:
                try:
                    operation_type = context.operation_type.value if document is not None else "unknown"
                except Exception:  # noqa: BLE001 - no such operation in the document
                    operation_type = "unknown"
                detail = "parse-error" if document is None else "validation-error"
                telemetry.observe_graphql(operation_type, "", success=False, seconds=seconds, error_detail=detail)
                return
            operation_type = context.operation_type.value
            fields = _root_fields(document, context.operation_name)
            result = context.result
            failed: dict[str, str] = {}
            for error in (getattr(result, "errors", None) or []):
                path = getattr(error, "path", None)
                if path:
                    failed.setdefault(str(path[0]), _detail(error))
                else:  # not tied to a field: every field failed
                    for key in fields:
                        failed.setdefault(key, _detail(error))
            for key, name in fields.items():
                detail = failed.get(key, "")
                telemetry.observe_graphql(operation_type, name, success=not detail, seconds=seconds,
                                          error_detail=detail)
        except Exception:  # noqa: BLE001 - metrics never fail the operation
            telemetry.observe_graphql("unknown", "", success=False, seconds=seconds, error_detail="unknown")
