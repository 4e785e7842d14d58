"""The reports the apps register (from their ``AppConfig.ready()``) and how one is described.

A ``Report`` says what ``GET /export/reports`` shows (its columns with their keys,
names, descriptions and types), which filters and order keys its request may use, who
may run it (``allowed(user)``) and how its rows are read (``rows(user, export)``: an
iterator of tuples, one value per requested column, read lazily in constant memory).
``queryset_rows`` is that iterator for a report backed by one queryset: the request's
filter, its order (then the primary key) and the columns' ``values_list`` paths, so
related values come from joins in the same query, never one query per row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

#: rows fetched from the database at a time (a server-side cursor on PostgreSQL)
CHUNK_ROWS = 2000
FIELD_TYPES = ("string", "integer", "datetime", "boolean", "uuid", "json")


@dataclass(frozen=True)
class Column:
    key: str
    name: str  # the CSV header
    description: str
    field_type: str  # one of FIELD_TYPES
    source: str | None = None  # the ORM path (values_list) for queryset reports; default: the key

    def __post_init__(self):
        assert self.field_type in FIELD_TYPES, self.field_type

    @property
    def path(self) -> str:
        return self.source or self.key

    def describe(self) -> dict:
        return {"key": self.key, "name": self.name, "description": self.description, "field_type": self.field_type}


@dataclass(frozen=True)
class Report:
    key: str
    name: str
    description: str
    columns: tuple[Column, ...]
    filters: dict  # filter name -> a filter kind of backendai.exports.request
    orders: dict  # order key -> ORM path (queryset reports) or a name the report's rows understand
    rows: Callable  # (user, ExportRequest) -> iterator of tuples
    allowed: Callable  # user -> bool
    default_order: tuple = (("created_at", False),)
    tiebreak: str = "pk"

    def describe(self) -> dict:
        return {"report_key": self.key, "name": self.name, "description": self.description,
                "fields": [column.describe() for column in self.columns]}


_REPORTS: dict[str, Report] = {}


def register(*reports: Report) -> None:
    """Add (or replace, by key) reports; called from an app's ``ready()``."""
    for report in reports:
        _REPORTS[report.key] = report


def registered() -> list[Report]:
    return list(_REPORTS.values())


def get(key: str) -> Report | None:
    return _REPORTS.get(key)


def queryset_rows(queryset, export) -> Iterator[tuple]:
    """The rows of ``queryset`` (already limited to what the caller may see) for ``export``."""
    ordering = [("-" if descending else "") + export.report.orders[key] for key, descending in export.order]
    return (queryset.filter(export.q()).order_by(*ordering, export.report.tiebreak)
            .values_list(*[column.path for column in export.columns]).iterator(chunk_size=CHUNK_ROWS))


def picked(getters: dict, export, rows: Iterator) -> Iterator[tuple]:
    """For rows that are not a queryset's: each row as a tuple of the requested columns, from
    ``getters`` (column key -> ``row -> value``); closing this closes ``rows``."""
    chosen = [getters[column.key] for column in export.columns]
    try:
        for row in rows:
            yield tuple(get(row) for get in chosen)
    finally:
        getattr(rows, "close", lambda: None)()


def empty() -> Iterator[tuple]:
    return iter(())
