"""What an export request may ask, checked before any query runs.

The body is the client's ``<Report>ExportCSVInput``: ``{"fields": [...], "filter": {...},
"order": [{"field", "direction"}], "encoding": "utf-8"}``, every key optional.  A
filter is an object whose keys are the report's filters; each kind reads the client's
shape:

* ``Text``: a ``StringFilter``, ``{"contains": "x"}`` and its siblings (``equals``,
  ``starts_with``, ``ends_with``, their ``not_`` / ``i_`` / ``i_not_`` forms, ``in``
  (also spelled ``in_``), ``not_in``, ``i_in``, ``i_not_in``); several operations AND;
* ``Choice``: a list of values (SQL ``IN``);
* ``Range``: a ``DateTimeRangeFilter``, ``{"after": ISO, "before": ISO}``, both inclusive
  (a datetime without a zone is UTC, a date is its midnight);
* ``Flag``: ``true`` / ``false``;
* ``UUIDs``: a ``UUIDFilter``, ``{"equals"|"not_equals": uuid, "in"|"not_in": [uuid]}``;
* ``Nested``: an object of further filters (a session's ``user``).

Anything else (an unknown key, a wrong type, an over-long string or list, an unknown
field or order key, an encoding we do not write) is refused with 400
``invalid-api-params`` naming the offending part; nothing is queried then.
"""
from __future__ import annotations

import codecs
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, time, timezone
from typing import Any

from django.db.models import Q
from django.db.models.functions import Lower
from django.db.models.lookups import In
from django.utils import dateparse

from backendai.api import errors

MAX_TEXT = 512  # characters in one filter string
MAX_LIST = 1000  # values in one IN list
MAX_ORDERS = 10
MAX_FILENAME = 255
#: encodings the CSV may be written in (client docs: utf-8, euc-kr), by Python codec name -> charset label
ENCODINGS = {"utf-8": "utf-8", "euc_kr": "euc-kr", "cp949": "cp949"}
BODY_KEYS = ("fields", "filter", "order", "encoding")
DIRECTIONS = ("ASC", "DESC")


def _bad(label: str, why: str) -> errors.BackendAIError:
    return errors.InvalidAPIParameters(f"{label}: {why}")


def _string(label: str, value, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise _bad(label, "must be a string")
    if len(value) > limit:
        raise _bad(label, f"is longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(label, "is not valid Unicode (a lone surrogate)") from None
    if "\x00" in value:
        raise _bad(label, "holds a NUL character")
    return value


def _strings(label: str, value, limit: int = MAX_LIST) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _bad(label, "must be a list of strings")
    if len(value) > limit:
        raise _bad(label, f"holds more than {limit} values")
    return tuple(_string(f"{label}[{index}]", item) for index, item in enumerate(value))


def _object(label: str, value, allowed) -> dict:
    if not isinstance(value, dict):
        raise _bad(label, "must be an object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise _bad(label, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
    return value


# --- filter kinds ---------------------------------------------------------------------------

#: StringFilter operations: key -> (operation, case-insensitive, negated)
_TEXT_OPS = {
    "equals": ("exact", False, False), "contains": ("contains", False, False),
    "starts_with": ("startswith", False, False), "ends_with": ("endswith", False, False),
    "not_equals": ("exact", False, True), "not_contains": ("contains", False, True),
    "not_starts_with": ("startswith", False, True), "not_ends_with": ("endswith", False, True),
    "i_equals": ("exact", True, False), "i_contains": ("contains", True, False),
    "i_starts_with": ("startswith", True, False), "i_ends_with": ("endswith", True, False),
    "i_not_equals": ("exact", True, True), "i_not_contains": ("contains", True, True),
    "i_not_starts_with": ("startswith", True, True), "i_not_ends_with": ("endswith", True, True),
    "in": ("in", False, False), "in_": ("in", False, False), "not_in": ("in", False, True),
    "i_in": ("in", True, False), "i_not_in": ("in", True, True),
}


@dataclass(frozen=True)
class TextMatch:
    """One StringFilter operation."""

    operation: str  # exact, contains, startswith, endswith, in
    value: Any  # a string, or a tuple of strings for ``in``
    insensitive: bool
    negated: bool

    def q(self, path: str, is_uuid: bool = False) -> Q:
        if self.operation == "in":
            if self.insensitive and not is_uuid:
                query = Q(In(Lower(path), [v.lower() for v in self.value]))
            else:
                query = Q(**{f"{path}__in": list(self.value)})
        else:
            # a UUID column compares exactly as a UUID (already parsed, so case does not matter)
            prefix = "i" if self.insensitive and not (is_uuid and self.operation == "exact") else ""
            query = Q(**{f"{path}__{prefix}{self.operation}": self.value})
        return ~query if self.negated else query

    def matches(self, subject: str | None) -> bool:
        """The same test in Python, for a value that is a constant of the report."""
        if subject is None:
            return False
        fold = (lambda s: s.lower()) if self.insensitive else (lambda s: s)
        text = fold(subject)
        if self.operation == "in":
            found = text in {fold(v) for v in self.value}
        else:
            value = fold(self.value)
            found = {"exact": text == value, "contains": value in text,
                     "startswith": text.startswith(value), "endswith": text.endswith(value)}[self.operation]
        return found != self.negated


@dataclass(frozen=True)
class TextCondition:
    path: str | None
    matches_: tuple[TextMatch, ...]
    is_uuid: bool = False

    def q(self) -> Q:
        query = Q()
        for match in self.matches_:
            query &= match.q(self.path, self.is_uuid)
        return query

    def matches(self, subject: str | None) -> bool:
        return all(match.matches(subject) for match in self.matches_)


@dataclass(frozen=True)
class Text:
    """A ``StringFilter`` on ``path`` (``is_uuid``: the column holds UUIDs; ``equals`` and
    ``in`` then take UUIDs, the other operations compare the UUID's text)."""

    path: str | None = None
    is_uuid: bool = False

    def parse(self, label: str, raw) -> TextCondition:
        _object(label, raw, _TEXT_OPS)
        found = []
        for key, value in raw.items():
            if value is None:
                continue
            operation, insensitive, negated = _TEXT_OPS[key]
            where = f"{label}.{key}"
            if operation == "in":
                value = _strings(where, value)
                if self.is_uuid:
                    value = tuple(str(_uuid(f"{where}[{i}]", v)) for i, v in enumerate(value))
            else:
                value = _string(where, value)
                if self.is_uuid and operation == "exact":
                    value = str(_uuid(where, value))
            found.append(TextMatch(operation, value, insensitive, negated))
        return TextCondition(self.path, tuple(found), self.is_uuid)


def _uuid(label: str, value) -> uuid.UUID:
    try:
        return uuid.UUID(_string(label, value, 64))
    except ValueError:
        raise _bad(label, "is not a UUID") from None


@dataclass(frozen=True)
class ChoiceCondition:
    path: str | None
    values: tuple[str, ...]

    def q(self) -> Q:
        return Q(**{f"{self.path}__in": list(self.values)})

    def matches(self, subject: str | None) -> bool:
        return subject in self.values


@dataclass(frozen=True)
class Choice:
    """A list of values (``IN``).  ``choices``: the only values accepted (case-folded by
    ``case``); without them any value of ``pattern`` is accepted and one we never store
    simply matches nothing (a status of the real manager's that we do not have)."""

    path: str | None = None
    choices: tuple[str, ...] | None = None
    case: str | None = None  # "upper", "lower" or None
    pattern: str = r"^[A-Za-z0-9_.-]{1,64}$"

    def parse(self, label: str, raw) -> ChoiceCondition:
        values = _strings(label, raw)
        normalized = []
        for index, value in enumerate(values):
            value = value.upper() if self.case == "upper" else value.lower() if self.case == "lower" else value
            if self.choices is not None and value not in self.choices:
                raise _bad(f"{label}[{index}]", f"{value!r} is not one of {', '.join(self.choices)}")
            if self.choices is None and not re.fullmatch(self.pattern, value):
                raise _bad(f"{label}[{index}]", f"{value!r} is not a valid value")
            normalized.append(value)
        return ChoiceCondition(self.path, tuple(normalized))


def _moment(label: str, raw) -> datetime:
    text = _string(label, raw, 64)
    try:
        value = dateparse.parse_datetime(text)
        if value is None:
            day = dateparse.parse_date(text)
            value = datetime.combine(day, time()) if day is not None else None
    except ValueError:
        value = None
    if value is None:
        raise _bad(label, f"{text!r} is not an ISO 8601 date or datetime")
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class RangeCondition:
    path: str | None
    after: datetime | None
    before: datetime | None

    def q(self) -> Q:
        query = Q()
        if self.after is not None:
            query &= Q(**{f"{self.path}__gte": self.after})
        if self.before is not None:
            query &= Q(**{f"{self.path}__lte": self.before})
        return query


@dataclass(frozen=True)
class Range:
    path: str | None = None

    def parse(self, label: str, raw) -> RangeCondition:
        _object(label, raw, ("after", "before"))
        after = _moment(f"{label}.after", raw["after"]) if raw.get("after") is not None else None
        before = _moment(f"{label}.before", raw["before"]) if raw.get("before") is not None else None
        if after is not None and before is not None and after > before:
            raise _bad(label, "after is later than before")
        return RangeCondition(self.path, after, before)


@dataclass(frozen=True)
class FlagCondition:
    path: str | None
    value: bool

    def q(self) -> Q:
        return Q(**{self.path: self.value})


@dataclass(frozen=True)
class Flag:
    path: str | None = None

    def parse(self, label: str, raw) -> FlagCondition:
        if not isinstance(raw, bool):
            raise _bad(label, "must be true or false")
        return FlagCondition(self.path, raw)


@dataclass(frozen=True)
class UUIDCondition:
    path: str | None
    equals: uuid.UUID | None = None
    not_equals: uuid.UUID | None = None
    in_: tuple[uuid.UUID, ...] | None = None
    not_in: tuple[uuid.UUID, ...] | None = None

    def q(self) -> Q:
        query = Q()
        if self.equals is not None:
            query &= Q(**{self.path: self.equals})
        if self.not_equals is not None:
            query &= ~Q(**{self.path: self.not_equals})
        if self.in_ is not None:
            query &= Q(**{f"{self.path}__in": list(self.in_)})
        if self.not_in is not None:
            query &= ~Q(**{f"{self.path}__in": list(self.not_in)})
        return query

    def matches(self, subject: uuid.UUID | None) -> bool:
        if subject is None:
            return False
        return ((self.equals is None or subject == self.equals) and (self.not_equals is None or subject != self.not_equals)
                and (self.in_ is None or subject in self.in_) and (self.not_in is None or subject not in self.not_in))


@dataclass(frozen=True)
class UUIDs:
    path: str | None = None

    def parse(self, label: str, raw) -> UUIDCondition:
        _object(label, raw, ("equals", "not_equals", "in", "in_", "not_in"))
        found: dict = {}
        for key in ("equals", "not_equals"):
            if raw.get(key) is not None:
                found[key] = _uuid(f"{label}.{key}", raw[key])
        for key, name in (("in", "in_"), ("in_", "in_"), ("not_in", "not_in")):
            if raw.get(key) is not None:
                values = _strings(f"{label}.{key}", raw[key])
                found[name] = tuple(_uuid(f"{label}.{key}[{i}]", v) for i, v in enumerate(values))
        return UUIDCondition(self.path, **found)


@dataclass(frozen=True)
class NestedCondition:
    children: dict

    def q(self) -> Q:
        query = Q()
        for condition in self.children.values():
            query &= condition.q()
        return query


@dataclass(frozen=True)
class Nested:
    """An object of further filters, e.g. a session's ``user: {email, username}``."""

    specs: dict = field(default_factory=dict)

    def parse(self, label: str, raw) -> NestedCondition:
        return NestedCondition(parse_filter(self.specs, raw, label))


def parse_filter(specs: dict, raw, label: str = "filter") -> dict:
    """``{name: condition}`` for the keys of ``raw`` that are set (``null`` means unset)."""
    _object(label, raw, specs)
    return {name: specs[name].parse(f"{label}.{name}", value) for name, value in raw.items() if value is not None}


# --- the whole request ----------------------------------------------------------------------

@dataclass(frozen=True)
class ExportRequest:
    report: Any  # registry.Report
    columns: tuple  # the Columns to write, in order
    conditions: dict  # filter name -> condition
    order: tuple[tuple[str, bool], ...]  # (order key, descending), the report's default when none was asked
    encoding: str  # Python codec name
    charset: str  # its label for Content-Type
    filename: str

    def q(self) -> Q:
        query = Q()
        for condition in self.conditions.values():
            query &= condition.q()
        return query


def parse_request(report, body, filename: str | None, now: datetime) -> ExportRequest:
    body = _object("body", body if body is not None else {}, BODY_KEYS)
    return ExportRequest(
        report=report,
        columns=_columns(report, body.get("fields")),
        conditions=parse_filter(report.filters, body["filter"]) if body.get("filter") is not None else {},
        order=_order(report, body.get("order")) or report.default_order,
        **_encoding(body.get("encoding")),
        filename=_filename(filename) if filename else f"{report.key}-{now:%Y%m%d-%H%M%S}.csv",
    )


def _columns(report, raw) -> tuple:
    if raw is None or raw == []:
        return report.columns
    keys = _strings("fields", raw, len(report.columns) * 4)
    by_key = {column.key: column for column in report.columns}
    unknown = [key for key in keys if key not in by_key]
    if unknown:
        raise _bad("fields", f"unknown field(s) {', '.join(map(repr, unknown))} of report {report.key!r} "
                             f"(known: {', '.join(by_key)})")
    return tuple(by_key[key] for key in dict.fromkeys(keys))


def _order(report, raw) -> tuple:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _bad("order", "must be a list of {field, direction}")
    if len(raw) > MAX_ORDERS:
        raise _bad("order", f"holds more than {MAX_ORDERS} entries")
    found = []
    for index, item in enumerate(raw):
        label = f"order[{index}]"
        _object(label, item, ("field", "direction"))
        key = _string(f"{label}.field", item.get("field"), 64)
        if key not in report.orders:
            raise _bad(f"{label}.field", f"{key!r} is not orderable in report {report.key!r} "
                                         f"(orderable: {', '.join(report.orders)})")
        direction = _string(f"{label}.direction", item.get("direction", "ASC") or "ASC", 8).upper()
        if direction not in DIRECTIONS:
            raise _bad(f"{label}.direction", "must be ASC or DESC")
        found.append((key, direction == "DESC"))
    return tuple(found)


def _encoding(raw) -> dict:
    name = _string("encoding", raw if raw is not None else "utf-8", 32)
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        codec = None
    if codec not in ENCODINGS:
        raise _bad("encoding", f"{name!r} is not supported (use utf-8 or euc-kr)")
    return {"encoding": codec, "charset": ENCODINGS[codec]}


def _filename(raw: str) -> str:
    """The client's name for the file, its last path component only."""
    name = re.split(r"[/\\]", _string("X-Export-Filename", raw, MAX_FILENAME))[-1].strip()
    if not name or name in (".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _bad("X-Export-Filename", "must be a file name without control characters")
    return name
