"""The vfolders part of ``/admin/gql`` (client-wire §8): ``vfolder_list``, its
``VirtualFolder`` type and the plain function behind it.  ``backendai/api/graphql.py``
merges this ``Query`` into the schema.  Values are what the client's formatters
expect: ISO timestamps, lower-case statuses (``ready``), permissions as ``rw``...

Visibility: superadmins see every folder, domain admins their domain's, other
users the folders they own, share a project of or were invited to.  Folders
purged for good (``delete-complete``) are never listed; folders in the trash are.

``filter`` takes Backend.AI's small expression language (``name == "data" &
status != "delete-pending"``, ``name ilike "%proj%"``, ``usage_mode in ["model",
"data"]``, parentheses, ``&``, ``|``, ``!``); ``order`` a comma list of fields,
``-`` for descending (``-created_at,name``).
"""
from __future__ import annotations

import re
import uuid
from typing import Optional

import strawberry
from django.db.models import Q
from strawberry.types import Info

from accounts.models import User
from backendai.api import errors, gqlkit
from vfolders import services
from vfolders.models import VFolder, VFolderStatus

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

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op>==|!=|<=|>=|<|>|&|\||!|\(|\)|\[|\]|,)
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""", re.VERBOSE)
_WORD_OPS = {"like", "ilike", "in", "notin", "contains", "startswith", "endswith"}


def _tokens(text: str) -> list[tuple[str, object]]:
    position, tokens = 0, []
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise errors.InvalidAPIParameters(f"Cannot parse the filter near {text[position:position + 20]!r}")
        position = match.end()
        if match.group("string") is not None:
            raw = match.group("string")[1:-1]
            tokens.append(("value", re.sub(r"\\(.)", r"\1", raw)))
        elif match.group("number") is not None:
            number = match.group("number")
            tokens.append(("value", float(number) if "." in number else int(number)))
        elif match.group("op") is not None:
            tokens.append(("op", match.group("op")))
        else:
            word = match.group("word")
            lowered = word.lower()
            if lowered in ("true", "false"):
                tokens.append(("value", lowered == "true"))
            elif lowered in ("null", "none"):
                tokens.append(("value", None))
            elif lowered in _WORD_OPS:
                tokens.append(("op", lowered))
            else:
                tokens.append(("field", word))
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


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokens(text)
        self.index = 0

    def peek(self):
        return self.tokens[self.index] if self.index < len(self.tokens) else (None, None)

    def take(self, kind=None, value=None):
        token = self.peek()
        if token[0] is None or (kind and token[0] != kind) or (value is not None and token[1] != value):
            raise errors.InvalidAPIParameters(f"Unexpected {token[1]!r} in the filter")
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
        field = FIELDS[name]
        _, op = self.take("op")
        value = self.value()
        if name in ("id", "user", "group") and isinstance(value, str):
            try:
                value = uuid.UUID(value)
            except ValueError:
                raise errors.InvalidAPIParameters(f"{name} must be a UUID") from None
        if op in ("in", "notin"):
            if not isinstance(value, list):
                raise errors.InvalidAPIParameters(f"{op} needs a list like [\"a\", \"b\"]")
            q = Q(**{f"{field}__in": value})
            return ~q if op == "notin" else q
        if isinstance(value, list):
            raise errors.InvalidAPIParameters(f"{op} takes a single value")
        if op == "==":
            return Q(**{f"{field}__isnull": True}) if value is None else Q(**{field: value})
        if op == "!=":
            return ~Q(**{f"{field}__isnull": True}) if value is None else ~Q(**{field: value})
        if op in ("like", "ilike"):
            if not isinstance(value, str):
                raise errors.InvalidAPIParameters(f"{op} needs a string pattern")
            return Q(**{f"{field}__{'iregex' if op == 'ilike' else 'regex'}": _like_regex(value)})
        lookups = {"<": "lt", ">": "gt", "<=": "lte", ">=": "gte", "contains": "contains",
                   "startswith": "startswith", "endswith": "endswith"}
        if op not in lookups:
            raise errors.InvalidAPIParameters(f"Unknown operator {op!r} in the filter")
        return Q(**{f"{field}__{lookups[op]}": value})


def parse_filter(text: str | None) -> Q:
    if not text or not text.strip():
        return Q()
    return _Parser(text).parse()


def parse_order(text: str | None) -> list[str]:
    if not text or not text.strip():
        return ["created_at", "id"]
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


def visible_query(user: User, group_id=None):
    query = VFolder.objects.exclude(status=VFolderStatus.DELETE_COMPLETE)
    if user.is_superadmin:
        pass
    elif user.is_domain_admin:
        query = query.filter(domain_id=user.domain_id)
    else:
        query = query.filter(services._personal_q(user))
    if group_id:
        project_id = group_id if isinstance(group_id, uuid.UUID) else services._parse_uuid(str(group_id))
        if project_id is None:
            raise errors.InvalidAPIParameters("group_id must be a project id")
        query = query.filter(project_id=project_id)
    return query


def item(access: services.Access) -> dict:
    f = access.folder
    return {
        "id": str(f.id),
        "host": f.host_id,
        "quota_scope_id": f.quota_scope_id,
        "name": f.name,
        "user": str(f.user_id) if f.user_id else None,
        "user_email": f.user.email if f.user_id else None,
        "group": str(f.project_id) if f.project_id else None,
        "group_name": f.project.name if f.project_id else None,
        "domain_name": f.domain_id,
        "creator": f.creator,
        "unmanaged_path": None,
        "usage_mode": f.usage_mode,
        "permission": access.shown_permission,
        "ownership_type": f.ownership_type,
        "max_files": 0,
        "max_size": 0,
        "created_at": services.iso(f.created_at),
        "last_used": services.iso(f.last_used),
        "num_files": 0,
        "cur_size": 0,
        "cloneable": f.cloneable,
        "status": f.status,
    }


def vfolder_list(user: User, limit: int, offset: int, group_id=None, filter: str | None = None,
                 order: str | None = None) -> tuple[list[dict], int]:
    """One page of the folders ``user`` may see and the total count (four queries)."""
    if not isinstance(limit, int) or not isinstance(offset, int) or limit < 0 or offset < 0:
        raise errors.InvalidAPIParameters("limit and offset must be non-negative integers")
    limit = min(limit, 1000)
    query = visible_query(user, group_id).filter(parse_filter(filter))
    total = query.count()
    page = list(query.select_related("user", "project").order_by(*parse_order(order))[offset:offset + limit])
    context = services.AccessContext(user, [f.id for f in page])
    items = []
    for folder in page:
        access = context.access(folder) or services.Access(folder, folder.permission, "admin", folder.permission)
        items.append(item(access))
    return items, total


@strawberry.type
class VirtualFolder:
    id: Optional[str]
    host: Optional[str]
    name: Optional[str]
    created_at: Optional[str]
    creator: Optional[str]
    group: Optional[str]
    group_name: Optional[str]
    user: Optional[str]
    user_email: Optional[str]
    permission: Optional[str]
    ownership_type: Optional[str]
    status: Optional[str]
    usage_mode: Optional[str]
    cloneable: Optional[bool]


@strawberry.type
class VirtualFolderList:
    items: list[VirtualFolder]
    total_count: int


@strawberry.type
class Query:
    @strawberry.field
    def vfolder_list(self, info: Info, limit: int, offset: int, group_id: Optional[uuid.UUID] = None,
                     filter: Optional[str] = None, order: Optional[str] = None) -> VirtualFolderList:
        user, _ = gqlkit.actor(info)
        limit, offset = gqlkit.page(limit, offset)
        rows, total = vfolder_list(user, limit, offset, group_id=str(group_id) if group_id else None,
                                   filter=filter, order=order)
        fields = VirtualFolder.__annotations__
        return VirtualFolderList(items=[VirtualFolder(**{k: row.get(k) for k in fields}) for row in rows],
                                 total_count=total)
