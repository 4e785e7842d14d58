"""Every input rule of a session request, in one place.

Types, ranges and lengths of each field of a create request (``POST /session``
and the web form), the session-name rule (create and rename), the lookup
references of the other session endpoints, and the callback URL policy
(syntax at enqueue, addresses at enqueue and again at delivery).

Validators are Django-style (they raise ``django.core.exceptions.ValidationError``)
so the same function serves a DRF field, a Django form field and a service.
``clean_create`` runs a whole create request through a DRF serializer and turns
the first error into ``InvalidAPIParameters("<field>: <message>")``, before any
database work.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import string
import uuid
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal, InvalidOperation

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework import serializers

from backendai.api import errors
from backendai.slots import SlotError, parse_binary_size, parse_count, slot_type_of

# --- limits (the column lengths of sessions.models and the related tables) -----------------------
NAME_MIN, NAME_MAX = 4, 64            # Session.name; Backend.AI: 4-64 chars of ^\w[\w.-]*\w$ (ASCII)
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*[A-Za-z0-9_]")
RESERVED_NAMES = frozenset({"from-template"})
TAG_MAX = 64                           # Session.tag
IMAGE_MAX = 512                        # Session.image / Image.name
ARCH_MAX = 32                          # Session.architecture
GROUP_MAX = 64                         # Project.name (or a project UUID)
DOMAIN_MAX = 64                        # Domain.name
SCALING_GROUP_MAX = 64                 # ScalingGroup.name
ACCESS_KEY_MAX = 20                    # Keypair.access_key
AGENT_ID_MAX = 64                      # Agent.id
CALLBACK_URL_MAX = 1024                # Session.callback_url
STARTUP_COMMAND_MAX = 64 * 1024
BOOTSTRAP_SCRIPT_MAX = 256 * 1024
STARTS_AT_MAX = 64
CLUSTER_SIZE_MAX = 64
PRIORITY_MIN, PRIORITY_MAX = 0, 100
BATCH_TIMEOUT_MAX = 2**31 - 1          # PositiveIntegerField
MAX_WAIT_SECONDS_MAX = 3600            # a create request holds a worker while it waits
LIST_MAX = 64                          # dependencies, mounts, preopen ports, agent_list entries
DEPENDENCY_REF_MAX = 64                # a session name or UUID
MOUNT_REF_MAX = 1024                   # folder name or id, optionally with /sub/path
MOUNT_PATH_MAX = 1024
ENVIRON_MAX_ENTRIES = 256
ENV_NAME_MAX = 256
ENV_VALUE_MAX = 32 * 1024
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SLOT_NAME_MAX = 64
SLOT_VALUE_MAX = 64                    # characters of a slot amount given as a string
SLOT_AMOUNT_MAX = Decimal(2**63 - 1)
OPTS_MAX_ENTRIES = 32
OPT_VALUE_MAX = 256
SESSION_REF_MAX = 64                   # a session name (<= 64) or id (36) in a URL or query
CALLBACK_SCHEMES = ("http", "https")
DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
HOSTNAME_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")

_CONTROL = {chr(c) for c in range(0x20)} | {chr(0x7F)} | {chr(c) for c in range(0x80, 0xA0)} | {"\u2028", "\u2029"}


# --- plain checks ------------------------------------------------------------------------------------

def _has_control(value: str) -> bool:
    return any(ch in _CONTROL for ch in value)


def check_unicode(value: str) -> None:
    """Text that PostgreSQL can store: no NUL, no lone surrogates."""
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("must be valid Unicode text (no lone surrogates)") from None


def check_label(value: str, max_length: int, *, separators: bool = True, spaces: bool = True) -> None:
    """A one-line label: no control characters, no whitespace at either end,
    at most ``max_length`` characters, and optionally no ``/`` or ``\\``."""
    check_unicode(value)
    if len(value) > max_length:
        raise ValidationError(f"must be at most {max_length} characters (got {len(value)})")
    if _has_control(value):
        raise ValidationError("must not contain control characters or line breaks")
    if value != value.strip():
        raise ValidationError("must not start or end with whitespace")
    if not spaces and any(ch.isspace() for ch in value):
        raise ValidationError("must not contain whitespace")
    if not separators and ("/" in value or "\\" in value):
        raise ValidationError("must not contain '/' or '\\'")


def validate_session_name(value) -> str:
    """Backend.AI's session-name rule, for create and rename alike."""
    if not isinstance(value, str):
        raise ValidationError("must be a string")
    check_label(value, NAME_MAX, separators=False, spaces=False)
    if len(value) < NAME_MIN:
        raise ValidationError(f"must be {NAME_MIN}-{NAME_MAX} characters long")
    if not NAME_RE.fullmatch(value):
        raise ValidationError("must be 4-64 characters of letters, digits, '_', '-' and '.', "
                              "starting and ending with a letter, digit or '_'")
    if value in RESERVED_NAMES:
        raise ValidationError(f"{value!r} is a reserved name")
    return value


def validate_tag(value) -> str:
    if not isinstance(value, str):
        raise ValidationError("must be a string")
    check_label(value, TAG_MAX, separators=False)
    return value


def validate_environ_name(value) -> str:
    if not isinstance(value, str) or len(value) > ENV_NAME_MAX or not ENV_NAME_RE.fullmatch(value):
        raise ValidationError(f"{str(value)[:40]!r} is not a variable name (letters, digits and '_', "
                              f"not starting with a digit, at most {ENV_NAME_MAX} characters)")
    return value


def validate_environ_value(value) -> str:
    if not isinstance(value, str):
        raise ValidationError("must be a string")
    check_unicode(value)
    if len(value) > ENV_VALUE_MAX:
        raise ValidationError(f"must be at most {ENV_VALUE_MAX} characters")
    return value


def validate_environ(mapping) -> dict:
    if not isinstance(mapping, dict):
        raise ValidationError("must map names to string values")
    if len(mapping) > ENVIRON_MAX_ENTRIES:
        raise ValidationError(f"at most {ENVIRON_MAX_ENTRIES} variables")
    for key, value in mapping.items():
        validate_environ_name(key)
        try:
            validate_environ_value(value)
        except ValidationError as exc:
            raise ValidationError(f"{key}: {exc.messages[0]}") from None
    return mapping


def parse_slot_amount(slot: str, value) -> Decimal:
    """One requested slot amount: a string or a finite number, 0 <= amount <= 2**63-1."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValidationError("must be a number or a string such as '2' or '4g'")
    if isinstance(value, str) and len(value) > SLOT_VALUE_MAX:
        raise ValidationError(f"must be at most {SLOT_VALUE_MAX} characters")
    try:
        amount = parse_binary_size(value, slot) if _is_bytes(slot) else _count(value, slot)
    except SlotError as exc:
        raise ValidationError(str(exc)) from None
    except (InvalidOperation, OverflowError, ValueError):
        raise ValidationError(f"{str(value)[:40]!r} is not a valid amount") from None
    if amount.is_nan() or amount.is_infinite():
        raise ValidationError("must be a finite amount")
    if amount < 0:
        raise ValidationError("must not be negative")
    if amount > SLOT_AMOUNT_MAX:
        raise ValidationError(f"must be at most {SLOT_AMOUNT_MAX}")
    return amount


def _is_bytes(slot: str) -> bool:
    """By name (``mem``, ``*.mem``); the declared type is applied again by ``compute_request``."""
    return slot_type_of(slot) == "bytes"


def _count(value, slot):
    # parse_count quantizes to 3 places: bound the magnitude first so that can't overflow
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")) or abs(value) > SLOT_AMOUNT_MAX:
            raise ValidationError("must be a finite amount at most 2**63-1")
    elif isinstance(value, str):
        digits = value.strip().split(".")[0]
        if len(digits) > 19:
            raise ValidationError(f"must be at most {SLOT_AMOUNT_MAX}")
    return parse_count(value, slot)


def validate_resources(mapping) -> dict:
    if not isinstance(mapping, dict):
        raise ValidationError("must be an object of slot names to amounts")
    if len(mapping) > OPTS_MAX_ENTRIES:
        raise ValidationError(f"at most {OPTS_MAX_ENTRIES} slots")
    for slot, value in mapping.items():
        if not isinstance(slot, str) or not slot or len(slot) > SLOT_NAME_MAX or _has_control(slot):
            raise ValidationError(f"{str(slot)[:40]!r} is not a slot name")
        check_unicode(slot)
        try:
            parse_slot_amount(slot, value)
        except ValidationError as exc:
            raise ValidationError(f"{slot}: {exc.messages[0]}") from None
    return mapping


def validate_resource_opts(mapping) -> dict:
    if not isinstance(mapping, dict):
        raise ValidationError("must be an object")
    if len(mapping) > OPTS_MAX_ENTRIES:
        raise ValidationError(f"at most {OPTS_MAX_ENTRIES} options")
    for key, value in mapping.items():
        if not isinstance(key, str) or not key or len(key) > SLOT_NAME_MAX or _has_control(key):
            raise ValidationError(f"{str(key)[:40]!r} is not an option name")
        check_unicode(key)
        if value is None:
            continue
        if key == "shmem":
            try:
                parse_slot_amount("mem", value)
            except ValidationError as exc:
                raise ValidationError(f"shmem: {exc.messages[0]}") from None
            continue
        if isinstance(value, int):
            if not isinstance(value, bool) and abs(value) > SLOT_AMOUNT_MAX:
                raise ValidationError(f"{key}: out of range")
            continue
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise ValidationError(f"{key}: must be a finite number")
            continue
        if not isinstance(value, str):
            raise ValidationError(f"{key}: must be a string, a number or a boolean")
        try:
            check_unicode(value)
        except ValidationError as exc:
            raise ValidationError(f"{key}: {exc.messages[0]}") from None
        if len(value) > OPT_VALUE_MAX:
            raise ValidationError(f"{key}: at most {OPT_VALUE_MAX} characters")
    return mapping


def validate_mount_options(mapping) -> dict:
    if not isinstance(mapping, dict):
        raise ValidationError("must map folder names to objects")
    if len(mapping) > LIST_MAX:
        raise ValidationError(f"at most {LIST_MAX} folders")
    for name, options in mapping.items():
        if not isinstance(name, str) or len(name) > MOUNT_REF_MAX:
            raise ValidationError("folder names must be strings")
        check_unicode(name)
        if not isinstance(options, dict):
            raise ValidationError(f"{name[:40]}: must be an object like {{\"permission\": \"ro\"}}")
        for key, value in options.items():
            if not isinstance(key, str) or len(key) > SLOT_NAME_MAX:
                raise ValidationError(f"{name[:40]}: option names must be strings")
            if value is not None and (not isinstance(value, str) or len(value) > OPT_VALUE_MAX):
                raise ValidationError(f"{name[:40]}.{key[:40]}: must be a string")
            check_unicode(key)
            if value is not None:
                check_unicode(value)
    return mapping


def parse_duration_or_time(value: str, now):
    """``starts_at``: an ISO 8601 time or a duration like ``1h`` (never an overflow)."""
    text = value.strip()
    match = DURATION_RE.fullmatch(text)
    try:
        if match:
            return now + timedelta(seconds=float(match.group(1)) * DURATION_UNITS[match.group(2)])
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt_timezone.utc)
        parsed.astimezone(dt_timezone.utc)
        return parsed
    except (ValueError, OverflowError):
        raise ValidationError(f"must be an ISO 8601 time or a duration like 1h, got {value[:64]!r}") from None


def validate_starts_at(value) -> str:
    if not isinstance(value, str):
        raise ValidationError("must be a string: an ISO 8601 time or a duration like 1h")
    parse_duration_or_time(value, timezone.now())
    return value


# --- callback URLs ---------------------------------------------------------------------------------

def address_allowed(address) -> bool:
    """Whether a callback may reach ``address`` (``settings.CALLBACK_ALLOWED_NETWORKS``:
    only those networks when set; otherwise anything but loopback, link-local,
    multicast and unspecified addresses)."""
    ip = ipaddress.ip_address(address) if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.scope_id:
            return False
    allowed = list(getattr(settings, "CALLBACK_ALLOWED_NETWORKS", None) or [])
    if allowed:
        return any(ip.version == net.version and ip in net for net in allowed)
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified)


def ip_literal(host: str):
    """The address when ``host`` is an IP literal (also IPv4 shorthand such as ``127.1``), else None."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text and all(ch in string.hexdigits + ".xX" for ch in text) and not text.endswith("."):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except (OSError, ValueError):
            return None
    return None


def parse_callback_url(value) -> httpx.URL:
    """The callback URL as httpx will send it; refuses anything but a plain http(s) URL with a valid host."""
    if not isinstance(value, str):
        raise ValidationError("must be a string")
    check_unicode(value)
    if len(value) > CALLBACK_URL_MAX:
        raise ValidationError(f"must be at most {CALLBACK_URL_MAX} characters")
    if _has_control(value) or any(ch.isspace() for ch in value):
        raise ValidationError("must not contain whitespace or control characters")
    try:
        url = httpx.URL(value)
        port = url.port
    except (httpx.InvalidURL, ValueError, TypeError, UnicodeError) as exc:
        raise ValidationError(f"is not a valid URL ({exc})") from None
    if url.scheme not in CALLBACK_SCHEMES or not value.lower().startswith(("http://", "https://")):
        raise ValidationError("must be an http:// or https:// URL")
    host = url.host
    if not host:
        raise ValidationError("must name a host")
    if port is not None and not 0 < port < 65536:
        raise ValidationError("has an invalid port")
    if ip_literal(host) is None:
        try:
            ascii_host = url.raw_host.decode("ascii")
        except UnicodeDecodeError:
            raise ValidationError("has an invalid host name") from None
        labels = ascii_host.rstrip(".").split(".")
        if len(ascii_host) > 253 or not all(HOSTNAME_LABEL_RE.fullmatch(label) for label in labels):
            raise ValidationError("has an invalid host name")
    return url


def validate_callback_url(value) -> str:
    """Enqueue-time check: syntax, and an IP-literal host must be an allowed address
    (host names are resolved and checked when a callback is delivered)."""
    url = parse_callback_url(value)
    literal = ip_literal(url.host)
    if literal is not None and not address_allowed(literal):
        raise ValidationError(f"the address {literal} is not allowed for callbacks (CALLBACK_ALLOWED_NETWORKS)")
    return value


# --- the create request --------------------------------------------------------------------------

class Text(serializers.CharField):
    """A string field that refuses non-strings (no silent int->str), NUL and lone
    surrogates, and keeps whitespace as sent (rules decide about it)."""

    default_error_messages = {"invalid": "must be a string"}

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            check_unicode(data)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages[0]) from None
        return super().to_internal_value(data)


class Integer(serializers.IntegerField):
    """An integer (a JSON number or a numeric string; never a boolean)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float, str)):
            self.fail("invalid")
        if isinstance(data, float) and (data != data or data in (float("inf"), float("-inf"))):
            self.fail("invalid")
        return super().to_internal_value(data)


class Boolean(serializers.BooleanField):
    def __init__(self, **kwargs):
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)


def _label(max_length, **kw):
    def check(value):
        if value:
            check_label(value, max_length, **kw)
    return check


def _mount_ref(value):
    if not value or not value.strip():
        raise ValidationError("must be a folder name or id")
    if _has_control(value):
        raise ValidationError("must not contain control characters")


def _mount_map(mapping):
    if not isinstance(mapping, dict):
        raise ValidationError("must map folder names to paths")
    if len(mapping) > LIST_MAX:
        raise ValidationError(f"at most {LIST_MAX} folders")
    for key, value in mapping.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValidationError("must map folder names to path strings")
        for part in (key, value):
            check_unicode(part)
            if len(part) > MOUNT_PATH_MAX or _has_control(part):
                raise ValidationError(f"{key[:40]!r}: at most {MOUNT_PATH_MAX} characters, no control characters")
    return mapping


def _access_key(value):
    if value and not re.fullmatch(r"[A-Za-z0-9]{1,%d}" % ACCESS_KEY_MAX, value):
        raise ValidationError(f"must be an access key (letters and digits, at most {ACCESS_KEY_MAX})")


class JSONObject(serializers.Field):
    """A JSON object checked by a Django-style validator (keeps the mapping)."""

    def __init__(self, check, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)
        self.check = check

    def to_internal_value(self, data):
        try:
            return self.check(data)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages[0]) from None

    def to_representation(self, value):
        return value


class CreateRequestSerializer(serializers.Serializer):
    """Types, ranges and lengths of every field of ``EnqueueRequest`` (canonical names)."""

    image = Text(max_length=IMAGE_MAX, allow_blank=False, allow_null=False, required=True,
                 validators=[_label(IMAGE_MAX, spaces=False)])
    name = Text(max_length=NAME_MAX, validators=[lambda v: v and validate_session_name(v)])
    session_type = serializers.ChoiceField(choices=["interactive", "batch", "inference"], required=False)
    architecture = Text(max_length=ARCH_MAX, validators=[_label(ARCH_MAX, separators=False, spaces=False)])
    group = Text(max_length=GROUP_MAX, allow_blank=False, validators=[_label(GROUP_MAX, separators=False)])
    domain = Text(max_length=DOMAIN_MAX, allow_blank=False, validators=[_label(DOMAIN_MAX, separators=False)])
    cluster_size = Integer(min_value=1, max_value=CLUSTER_SIZE_MAX)
    cluster_mode = serializers.ChoiceField(choices=["single-node", "multi-node"], required=False)
    priority = Integer(min_value=PRIORITY_MIN, max_value=PRIORITY_MAX)
    tag = Text(max_length=TAG_MAX, validators=[lambda v: v and validate_tag(v)])
    enqueue_only = Boolean()
    max_wait_seconds = Integer(min_value=0, max_value=MAX_WAIT_SECONDS_MAX)
    starts_at = Text(max_length=STARTS_AT_MAX, validators=[lambda v: v and validate_starts_at(v)])
    reuse_if_exists = Boolean()
    startup_command = Text(max_length=STARTUP_COMMAND_MAX)
    bootstrap_script = Text(max_length=BOOTSTRAP_SCRIPT_MAX)
    dependencies = serializers.ListField(child=Text(max_length=DEPENDENCY_REF_MAX, allow_blank=False, allow_null=False),
                                         max_length=LIST_MAX, required=False, allow_null=True)
    callback_url = Text(max_length=CALLBACK_URL_MAX, validators=[lambda v: v and validate_callback_url(v)])
    owner_access_key = Text(max_length=ACCESS_KEY_MAX, validators=[_access_key])
    batch_timeout = Integer(min_value=1, max_value=BATCH_TIMEOUT_MAX)
    mounts = serializers.ListField(child=Text(max_length=MOUNT_REF_MAX, allow_null=False, validators=[_mount_ref]),
                                   max_length=LIST_MAX, required=False, allow_null=True)
    mount_map = JSONObject(_mount_map)
    mount_options = JSONObject(validate_mount_options)
    environ = JSONObject(validate_environ)
    scaling_group = Text(max_length=SCALING_GROUP_MAX, validators=[_label(SCALING_GROUP_MAX, separators=False)])
    resources = JSONObject(validate_resources)
    resource_opts = JSONObject(validate_resource_opts)
    preopen_ports = serializers.ListField(child=Integer(min_value=1024, max_value=65535, allow_null=False),
                                          max_length=LIST_MAX, required=False, allow_null=True)
    agent_list = serializers.ListField(child=Text(max_length=AGENT_ID_MAX, allow_blank=False, allow_null=False,
                                                  validators=[_label(AGENT_ID_MAX, separators=False, spaces=False)]),
                                       max_length=LIST_MAX, required=False, allow_null=True)
    inference_port = Integer(min_value=1, max_value=65535)


def _first_error(detail, path: str = "") -> tuple[str, str]:
    """The path and message of the first error in DRF's nested error detail."""
    if isinstance(detail, dict):
        key, value = next(iter(detail.items()))
        where = f"[{key}]" if isinstance(key, int) else (f".{key}" if path else str(key))
        return _first_error(value, path + where)
    if isinstance(detail, list):
        for item in detail:
            if item:
                return _first_error(item, path)
    return path, str(detail)


def invalid(field: str, message: str) -> errors.BackendAIError:
    """``InvalidAPIParameters("<field>: <message>")``, remembering the field for forms."""
    exc = errors.InvalidAPIParameters(f"{field}: {message}")
    exc.field = field
    return exc


def clean_create(fields: dict, names: dict | None = None) -> dict:
    """Validate a create request given by canonical field names; return the cleaned
    values (absent/None fields left out).  ``names`` maps canonical names to the
    names the client used, for the error message."""
    data = {k: v for k, v in fields.items() if v is not None}
    serializer = CreateRequestSerializer(data=data)
    if not serializer.is_valid():
        field, message = _first_error(serializer.errors)
        base = re.split(r"[.\[]", field, maxsplit=1)[0]
        shown = (names or {}).get(base, base) + field[len(base):]
        raise invalid(shown, message.rstrip("."))
    return {k: v for k, v in serializer.validated_data.items() if v is not None}


def clean_request(req):
    """Re-check an ``EnqueueRequest`` (from the API parser, the web form or code)."""
    values = clean_create(dataclasses.asdict(req))
    return dataclasses.replace(req, **values)


# --- other endpoints ---------------------------------------------------------------------------

def as_uuid(text) -> uuid.UUID | None:
    """``text`` as a UUID (dashed or hex), else None: never a malformed value in a pk lookup."""
    if not isinstance(text, str) or not re.fullmatch(r"[0-9a-fA-F-]{32,36}", text):
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def check_session_ref(value, field: str = "session") -> str:
    """A session name or id given in a URL or a query: a string PostgreSQL can compare."""
    if not isinstance(value, str) or not value:
        raise invalid(field, "must be a session name or id")
    try:
        check_unicode(value)
    except ValidationError as exc:
        raise invalid(field, exc.messages[0]) from None
    if len(value) > SESSION_REF_MAX:
        raise invalid(field, f"must be at most {SESSION_REF_MAX} characters")
    return value


def check_new_name(value, field: str = "name") -> str:
    try:
        return validate_session_name(value)
    except ValidationError as exc:
        raise invalid(field, exc.messages[0]) from None


def check_access_key_param(value, field: str = "owner_access_key") -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    try:
        check_unicode(value)
        _access_key(value)
    except ValidationError as exc:
        raise invalid(field, exc.messages[0]) from None
    return value


def check_query_text(value, field: str, max_length: int = 256) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    try:
        check_label(value, max_length)
    except ValidationError as exc:
        raise invalid(field, exc.messages[0]) from None
    return value
