"""Backend.AI's small filter and order language for folder listings, turned into
Django ``Q`` objects and ``order_by`` arguments.

``filter``: ``name == "data" & status != "delete-pending"``, ``name ilike "%proj%"``,
``usage_mode in ["model", "data"]``, ``created_at >= "2021-01-01"``, parentheses, ``&``,
``|``, ``!``.  Enumerated columns take their values (``ready``, ``rw``, ``user``) or
Backend.AI's enum names (``READY``, ``READ_WRITE``, ``USER``), as the CLI's help shows
them.  ``order``: a comma list of columns, ``-`` for descending, ``+`` (or nothing)
for ascending (``-created_at,name``).

Every value is checked against its column before any query runs, so a bad filter
is a 400 ``invalid-api-params`` naming the problem, never a database error."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, time

from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from backendai.api import errors
from vfolders.models import OwnershipType, UsageMode, VFolderPermission, VFolderStatus

#: The columns a filter or an order may name, and the model field each one reads.
FIELDS = {
    "id": "id",
    "host": "host_id",
    "name": "name",
    "quota_scope_id": "quota_scope_id",
    "usage_mode": "usage_mode",
    "permission": "permission",
    "ownership_type": "ownership_type",
    "status": "status",
    "creator": "creator",
    "cloneable": "cloneable",
    "created_at": "created_at",
    "last_used": "last_used",
    "user": "user_id",
    "user_email": "user__email",
    "group": "project_id",
    "group_name": "project__name",
    "domain_name": "domain_id",
}
UUID_FIELDS = frozenset({"id", "user", "group"})
DATETIME_FIELDS = frozenset({"created_at", "last_used"})
BOOLEAN_FIELDS = frozenset({"cloneable"})
TEXT_OPS = frozenset({"like", "ilike", "contains", "startswith", "endswith"})

#: Backend.AI's enum names for the enumerated columns (the CLI's help shows these).
ENUM_NAMES: dict[str, dict[str, str]] = {
    "status": {s.name: s.value for s in VFolderStatus},
    "permission": {**{p.name: p.value for p in VFolderPermission}, "OWNER_PERM": VFolderPermission.RW_DELETE},
    "ownership_type": {o.name: o.value for o in OwnershipType},
    "usage_mode": {m.name: m.value for m in UsageMode},
}

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op>==|!=|<=|>=|<|>|&|\||!|\(|\)|\[|\]|,)
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""", re.VERBOSE)
_WORD_OPS = {"like", "ilike", "in", "notin", "contains", "startswith", "endswith"}
_LOOKUPS = {"<": "lt", ">": "gt", "<=": "lte", ">=": "gte", "contains": "contains",
            "startswith": "startswith", "endswith": "endswith"}


def _word_token(word: str) -> tuple[str, object]:
    lowered = word.lower()
    if lowered in ("true", "false"):
        return "value", lowered == "true"
    if lowered in ("null", "none"):
        return "value", None
    if lowered in _WORD_OPS:
        return "op", lowered
    return "field", word


def _tokens(text: str) -> list[tuple[str, object]]:
    position, tokens = 0, []
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise errors.InvalidAPIParameters(f"Cannot parse the filter near {text[position:position + 20]!r}")
        position = match.end()
        if match.group("string") is not None:
            tokens.append(("value", re.sub(r"\\(.)", r"\1", match.group("string")[1:-1])))
        elif match.group("number") is not None:
            number = match.group("number")
            tokens.append(("value", float(number) if "." in number else int(number)))
        elif match.group("op") is not None:
            tokens.append(("op", match.group("op")))
        else:
            tokens.append(_word_token(match.group("word")))
    return tokens


def _like_regex(pattern: str) -> str:
    out = []
    for char in pattern:
        if char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(re.escape(char))
    return "^" + "".join(out) + "$"


def _moment(name: str, value) -> datetime:
    if not isinstance(value, str):
        raise errors.InvalidAPIParameters(f"{name} takes a date or an ISO timestamp in quotes")
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            moment = datetime.combine(day, time.min) if day else None
    except ValueError:
        moment = None
    if moment is None:
        raise errors.InvalidAPIParameters(f"{name}: {value!r} is not a date or an ISO timestamp")
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def convert(name: str, value):
    """``value`` as the column ``name`` stores it; 400 when it cannot be."""
    if value is None:
        return None
    if name in UUID_FIELDS:
        if not isinstance(value, str):
            raise errors.InvalidAPIParameters(f"{name} must be a UUID in quotes")
        try:
            return uuid.UUID(value)
        except ValueError:
            raise errors.InvalidAPIParameters(f"{name} must be a UUID") from None
    if name in DATETIME_FIELDS:
        return _moment(name, value)
    if name in BOOLEAN_FIELDS:
        if not isinstance(value, bool):
            raise errors.InvalidAPIParameters(f"{name} takes true or false")
        return value
    if isinstance(value, bool):
        raise errors.InvalidAPIParameters(f"{name} does not take true or false")
    names = ENUM_NAMES.get(name)
    if names and isinstance(value, str) and value in names:
        return names[value]
    return value if isinstance(value, str) else str(value)


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokens(text)
        self.index = 0

    def peek(self):
        return self.tokens[self.index] if self.index < len(self.tokens) else (None, None)

    def take(self, kind=None, value=None):
        token = self.peek()
        if token[0] is None or (kind and token[0] != kind) or (value is not None and token[1] != value):
            shown = "the end" if token[0] is None else repr(token[1])
            raise errors.InvalidAPIParameters(f"Unexpected {shown} in the filter")
        self.index += 1
        return token

    def parse(self) -> Q:
        result = self.disjunction()
        if self.index != len(self.tokens):
            raise errors.InvalidAPIParameters(f"Unexpected {self.peek()[1]!r} in the filter")
        return result

    def disjunction(self) -> Q:
        result = self.conjunction()
        while self.peek() == ("op", "|"):
            self.take()
            result = result | self.conjunction()
        return result

    def conjunction(self) -> Q:
        result = self.unary()
        while self.peek() == ("op", "&"):
            self.take()
            result = result & self.unary()
        return result

    def unary(self) -> Q:
        if self.peek() == ("op", "!"):
            self.take()
            return ~self.unary()
        if self.peek() == ("op", "("):
            self.take()
            result = self.disjunction()
            self.take("op", ")")
            return result
        return self.comparison()

    def value(self):
        if self.peek() == ("op", "["):
            self.take()
            items = []
            while self.peek() != ("op", "]"):
                items.append(self.take("value")[1])
                if self.peek() == ("op", ","):
                    self.take()
            self.take("op", "]")
            return items
        return self.take("value")[1]

    def comparison(self) -> Q:
        _, name = self.take("field")
        if name not in FIELDS:
            raise errors.InvalidAPIParameters(f"Unknown field {name!r} in the filter; use {', '.join(FIELDS)}")
        _, op = self.take("op")
        return _condition(name, op, self.value())


def _condition(name: str, op: str, value) -> Q:
    field = FIELDS[name]
    if op in ("in", "notin"):
        if not isinstance(value, list):
            raise errors.InvalidAPIParameters(f"{op} needs a list like [\"a\", \"b\"]")
        q = Q(**{f"{field}__in": [convert(name, item) for item in value if item is not None]})
        if None in value:
            q = q | Q(**{f"{field}__isnull": True})
        return ~q if op == "notin" else q
    if isinstance(value, list):
        raise errors.InvalidAPIParameters(f"{op} takes a single value")
    if op in TEXT_OPS and (name in UUID_FIELDS | DATETIME_FIELDS | BOOLEAN_FIELDS or not isinstance(value, str)):
        raise errors.InvalidAPIParameters(f"{op} compares text: {name} is not a text column or the value "
                                          f"is not a string")
    if op in ("like", "ilike"):
        return Q(**{f"{field}__{'iregex' if op == 'ilike' else 'regex'}": _like_regex(value)})
    value = convert(name, value)
    if op == "==":
        return Q(**{f"{field}__isnull": True}) if value is None else Q(**{field: value})
    if op == "!=":
        return ~Q(**{f"{field}__isnull": True}) if value is None else ~Q(**{field: value})
    if op not in _LOOKUPS:
        raise errors.InvalidAPIParameters(f"Unknown operator {op!r} in the filter")
    if value is None:
        raise errors.InvalidAPIParameters(f"{op} cannot compare with null")
    return Q(**{f"{field}__{_LOOKUPS[op]}": value})


def parse_filter(text: str | None) -> Q:
    if text is not None and not isinstance(text, str):
        raise errors.InvalidAPIParameters("filter must be a string")
    if not text or not text.strip():
        return Q()
    return _Parser(text).parse()


#: The default order of every folder listing: newest first, as Backend.AI lists them.
DEFAULT_ORDER = ("-created_at", "-id")


def parse_order(text: str | None) -> list[str]:
    """``order_by`` arguments for ``text``; the id breaks ties, so pages never overlap."""
    if text is not None and not isinstance(text, str):
        raise errors.InvalidAPIParameters("order must be a string")
    if not text or not text.strip():
        return list(DEFAULT_ORDER)
    result = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        descending = item.startswith("-")
        name = item.lstrip("+-").strip()
        if name not in FIELDS:
            raise errors.InvalidAPIParameters(f"Unknown order field {name!r}; use {', '.join(FIELDS)}")
        result.append(("-" if descending else "") + FIELDS[name])
    return result + ["id"]
