"""Body parsers.  The official client sends JSON bodies on GET and DELETE and
labels body-less requests ``text/plain``; both must parse."""
import json

from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser


class TextAsJSONParser(BaseParser):
    """``text/plain`` bodies: empty means no data, anything else must be JSON."""

    media_type = "text/plain"

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


class JSONOnlyNegotiation:
    """The API always answers JSON (or problem+json), whatever Accept says:
    the official client sends ``*/*`` and browsers send ``text/html``."""

    def select_parser(self, request, parsers):
        from rest_framework.negotiation import DefaultContentNegotiation

        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request, renderers, format_suffix=None):
        if format_suffix or request.query_params.get("format"):
            from rest_framework.negotiation import DefaultContentNegotiation

            return DefaultContentNegotiation().select_renderer(request, renderers, format_suffix)
        return renderers[0], renderers[0].media_type
