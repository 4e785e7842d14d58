"""The values that administration requests carry (GraphQL mutations, forms), checked for
type, range and length before any work; each failure is an ``invalid-api-params`` error
naming the field, never a 500."""
from __future__ import annotations

import ipaddress
import json
from typing import Any

from django.core.exceptions import ValidationError

from accounts.models import validate_image_patterns
from backendai import services as manager_services
from backendai.api import errors
from backendai.slots import ResourceSlot, SlotError

MAX_JSON_CHARS = 64 * 1024
MAX_TEXT = 512  # descriptions
MAX_HOSTS = 64
MAX_NAME = 128
MAX_LIST = 64
INT32 = 2**31 - 1


def invalid(exc: ValidationError) -> errors.BackendAIError:
    """A model's ``ValidationError`` as the API reports it."""
    if hasattr(exc, "message_dict"):
        text = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    else:
        text = " ".join(exc.messages)
    return errors.InvalidAPIParameters(text)


def text(name: str, value: Any, max_length: int = MAX_TEXT, *, blank: bool = True) -> str:
    if not isinstance(value, str):
        raise errors.InvalidAPIParameters(f"{name}: a string is required")
    value = value.strip()
    if len(value) > max_length:
        raise errors.InvalidAPIParameters(f"{name}: at most {max_length} characters")
    if not blank and not value:
        raise errors.InvalidAPIParameters(f"{name}: must not be empty")
    return value


def choice(name: str, value: Any, choices) -> str:
    allowed = [str(c) for c in choices]
    if not isinstance(value, str) or value not in allowed:
        raise errors.InvalidAPIParameters(f"{name}: one of {', '.join(allowed)}")
    return value


def integer(name: str, value: Any, low: int = 0, high: int = INT32) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise errors.InvalidAPIParameters(f"{name}: an integer from {low} to {high} is required")
    return value


def json_object(name: str, value: Any) -> dict | None:
    """A JSON-encoded object (Backend.AI's JSONString inputs); an object itself is taken as is."""
    if value is None or isinstance(value, dict):
        return value
    if not isinstance(value, str) or len(value) > MAX_JSON_CHARS:
        raise errors.InvalidAPIParameters(f"{name}: a JSON object of at most {MAX_JSON_CHARS} characters")
    try:
        parsed = json.loads(value) if value.strip() else {}
    except ValueError:
        raise errors.InvalidAPIParameters(f"{name}: not valid JSON") from None
    if not isinstance(parsed, dict):
        raise errors.InvalidAPIParameters(f"{name}: a JSON object is required")
    return parsed


def resource_slots(name: str, value: Any) -> dict:
    """A slot map (``{"cpu": "4", "mem": "16g"}``), normalized to the stored form (byte
    amounts in bytes, decimal strings); malformed names or amounts are refused."""
    mapping = json_object(name, value) or {}
    if len(mapping) > MAX_HOSTS:
        raise errors.InvalidAPIParameters(f"{name}: at most {MAX_HOSTS} slots")
    try:
        return ResourceSlot.from_json(mapping, manager_services.known_slot_types()).to_json()
    except SlotError as exc:
        raise errors.InvalidAPIParameters(f"{name}: {exc}") from None


def host_permissions(name: str, value: Any) -> dict:
    """``{"host": ["permission", ...]}`` with string names of sane length."""
    mapping = json_object(name, value) or {}
    if len(mapping) > MAX_HOSTS:
        raise errors.InvalidAPIParameters(f"{name}: at most {MAX_HOSTS} hosts")
    for host, permissions in mapping.items():
        if not host or len(host) > MAX_NAME:
            raise errors.InvalidAPIParameters(f"{name}: host names have 1 to {MAX_NAME} characters")
        if not isinstance(permissions, list) or len(permissions) > MAX_LIST or not all(
                isinstance(p, str) and 0 < len(p) <= MAX_NAME for p in permissions):
            raise errors.InvalidAPIParameters(f"{name}: {host!r} needs a list of permission names")
    return mapping


def string_list(name: str, value: Any, max_items: int = MAX_LIST, max_length: int = MAX_NAME) -> list[str]:
    if not isinstance(value, (list, tuple)) or len(value) > max_items or not all(
            isinstance(v, str) and 0 < len(v.strip()) <= max_length for v in value):
        raise errors.InvalidAPIParameters(f"{name}: a list of at most {max_items} names is required")
    return [v.strip() for v in value]


def image_patterns(name: str, value: Any) -> list[str]:
    """``Domain.allowed_images``: image names, a trailing ``*`` the only wildcard."""
    patterns = [v.strip() for v in value] if isinstance(value, (list, tuple)) and all(
        isinstance(v, str) for v in value) else value
    try:
        validate_image_patterns(patterns)
    except ValidationError as exc:
        raise errors.InvalidAPIParameters(f"{name}: {' '.join(exc.messages)}") from None
    return patterns


def client_ips(value: Any) -> list[str]:
    """CIDR networks (or addresses) a user may call the API from."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or len(value) > MAX_LIST:
        raise ValidationError(f"Give a list of at most {MAX_LIST} CIDR networks, e.g. [\"10.0.0.0/8\"].")
    result = []
    for item in value:
        text = str(item).strip()[:64]
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValidationError(f"{str(item)[:64]!r} is not an IP address or network.") from None
        result.append(text)
    return result


def api_client_ips(value: Any) -> list[str]:
    try:
        return client_ips(value)
    except ValidationError as exc:
        raise errors.InvalidAPIParameters("allowed_client_ip: " + " ".join(exc.messages)) from None
