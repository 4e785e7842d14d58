"""Body parsers.  The official client sends JSON bodies on GET and DELETE and
labels body-less requests ``text/plain``; both must parse.

One hardened parser reads every API body (``application/json`` and
``text/plain``) before any view work:

* at most ``settings.API_MAX_BODY`` bytes are read; a longer body (also a
  chunked one without ``Content-Length``) is refused with 413;
* the body must be UTF-8 JSON whose top level is an object (an empty body is
  ``{}``);
* ``NaN``, ``Infinity`` and ``-Infinity`` literals, floats that overflow to
  infinity and integers outside the signed 64-bit range are refused;
* nesting deeper than ``settings.API_MAX_JSON_DEPTH`` is refused;
* strings (keys and values) may not contain NUL characters (no column can
  store them).

Every refusal is a 400 ``invalid-api-params`` (413 for the size) naming what
was wrong; nothing reaches the view.
"""
import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser

from backendai.api import errors

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


class _Refused:
    """A number the API refuses, kept as a marker so the error can name its field."""

    def __init__(self, text: str, why: str):
        self.text, self.why = text[:40], why


def _parse_constant(name):
    return _Refused(name, "is not a number the API accepts")


def _parse_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        return _Refused(text, "is out of range")
    return value


def _parse_int(text):
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        return _Refused(text, "is out of range (64-bit integers)")
    return value


def _field(path: str) -> str:
    return path or "body"


def _check_structure(data, max_depth: int) -> None:
    """Depth, number and NUL checks without recursion (the input is hostile); the
    error names the field (``config.resources.cpu``, ``mounts[2]``)."""
    stack = [(data, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, (dict, list)) and depth > max_depth:
            raise errors.InvalidAPIParameters(f"{_field(path)}: JSON nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else key
                if "\x00" in key:
                    raise errors.InvalidAPIParameters(f"{_field(path)}: a key contains a NUL character")
                stack.append((item, depth + 1, child))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{path}[{index}]") for index, item in enumerate(value))
        elif isinstance(value, str) and "\x00" in value:
            raise errors.InvalidAPIParameters(f"{_field(path)}: NUL characters are not allowed")
        elif isinstance(value, _Refused):
            raise errors.InvalidAPIParameters(f"{_field(path)}: the number {value.text} {value.why}")


def read_limited(stream, limit: int) -> bytes:
    """Read at most ``limit`` bytes; 413 when the stream holds more."""
    if stream is None:
        return b""
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise errors.PayloadTooLarge(f"The request body is larger than {limit} bytes")
    return raw


def loads(raw: bytes | str):
    """Parse an API JSON body under the rules above; returns the object."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("JSON parse error - the body is not UTF-8") from None
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_parse_constant, parse_float=_parse_float, parse_int=_parse_int)
    except RecursionError:
        raise ParseError(f"JSON nested deeper than {settings.API_MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise ParseError(f"JSON parse error - {exc}") from None
    _check_structure(data, settings.API_MAX_JSON_DEPTH)
    if not isinstance(data, dict):
        raise ParseError("The request body must be a JSON object")
    return data


class HardenedJSONParser(BaseParser):
    """``application/json`` bodies (the limits above)."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        return loads(read_limited(stream, settings.API_MAX_BODY))


class TextAsJSONParser(HardenedJSONParser):
    """``text/plain`` bodies: empty means no data, anything else must be JSON."""

    media_type = "text/plain"


class JSONOnlyNegotiation:
    """The API always answers JSON (or problem+json), whatever Accept says:
    the official client sends ``*/*`` and browsers send ``text/html``."""

    def select_parser(self, request, parsers):
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request, renderers, format_suffix=None):
        if format_suffix or request.query_params.get("format"):

            return DefaultContentNegotiation().select_renderer(request, renderers, format_suffix)
        return renderers[0], renderers[0].media_type


def validated_params(request, serializer_class, *, ignore=()) -> dict:
    """A view's input: the query parameters and the JSON body (the body wins on a clash; query
    keys in ``ignore`` are left out), validated by ``serializer_class`` before any work."""
    data = {key: value for key, value in request.query_params.items() if key not in ignore}
    body = request.data
    if body and not isinstance(body, dict):
        raise errors.InvalidAPIParameters("The request body must be a JSON object")
    data.update(body or {})
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
