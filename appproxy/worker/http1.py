"""HTTP/1.x message heads: parsing, hop-by-hop filtering and small responses.

Bytes all the way: header names and values are never decoded on the hot path.
"""
from __future__ import annotations

import html
import json
import re

__all__ = ["HOP_BY_HOP", "HTTPError", "Request", "Response", "check_header", "parse_request", "parse_response",
           "simple_response", "error_page", "problem_page"]

MAX_HEAD = 64 * 1024
# Control characters other than HTAB: a bare CR or LF in a header would start a new header
# (response splitting, request smuggling), NUL and the rest are never legitimate (RFC 9110 §5.5).
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# RFC 9110 §7.6.1 plus the legacy proxy headers; anything named in Connection is hop-by-hop too.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization"})
REASONS = {
    200: "OK", 202: "Accepted", 204: "No Content", 302: "Found", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    421: "Misdirected Request", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


class HTTPError(Exception):
    """Answer the client with ``status`` and ``message`` (and close unless told otherwise).
    ``problem``: answer ``application/problem+json`` (API clients: inference circuits), with
    ``headers`` added."""

    problem = False
    headers: tuple = ()

    def __init__(self, status: int, message: str, reason: str = "", problem: bool = False, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or REASONS.get(status, "Error").lower().replace(" ", "-")
        if problem:
            self.problem = True
            self.headers = tuple(headers)


def _tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


class Request:
    __slots__ = ("method", "target", "version", "headers", "content_length", "chunked", "keep_alive", "upgrade",
                 "host", "connection_tokens", "cookies", "forwarded_for", "accept", "authorization")

    def __init__(self):
        self.content_length: int | None = None
        self.chunked = False
        self.upgrade: bytes | None = None
        self.host: bytes | None = None
        self.connection_tokens: set[bytes] = set()
        self.cookies: list[bytes] = []
        self.forwarded_for: list[bytes] = []
        self.accept = b""
        self.authorization = b""

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def wants_json(self) -> bool:
        return b"json" in self.accept and b"html" not in self.accept


class Response:
    __slots__ = ("version", "status", "status_line", "headers", "content_length", "chunked", "close")

    def __init__(self):
        self.content_length: int | None = None
        self.chunked = False
        self.close = False


def _headers(lines: list[bytes], clean: bool = False) -> list[tuple[bytes, bytes, bytes]]:
    """``clean``: the caller found no control character in the whole head (one search instead of
    one per line)."""
    headers = []
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or line[0] in (32, 9) or name[-1] in (32, 9) or (not clean and CONTROL.search(line)):
            raise HTTPError(400, "malformed header line")
        headers.append((name, name.lower(), value.strip()))
    return headers


_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0a, 0x20), 0x7f])


def _clean(head: bytes) -> bool:
    """No control character in ``head`` but its CRLF line ends: the same lines ``split(b"\\r\\n")``
    makes, so a bare CR or LF anywhere still counts.  Every CRLF accounts for two of the control
    bytes ``translate`` deletes (CRLFs cannot overlap); any other control byte is one more (a C
    loop over the head instead of a regular expression's character class)."""
    return len(head) - len(head.translate(None, _CONTROL_BYTES)) == 2 * head.count(b"\r\n")


def parse_request(head: bytes) -> Request:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    clean = _clean(head)
    if len(parts) != 3 or not parts[0] or not parts[1] or (not clean and CONTROL.search(lines[0])):
        raise HTTPError(400, "malformed request line")
    request = Request()
    request.method, request.target, request.version = parts
    if request.version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if request.version.startswith(b"HTTP/"):
            raise HTTPError(505, "only HTTP/1.0 and HTTP/1.1 are spoken here")
        raise HTTPError(400, "malformed request line")
    request.headers = headers = _headers(lines[1:], clean)
    transfer_encoding = None
    for _, lname, value in headers:
        if lname == b"content-length":
            if not value.isdigit():
                raise HTTPError(400, "bad Content-Length")
            length = int(value)
            if request.content_length is not None and request.content_length != length:
                raise HTTPError(400, "conflicting Content-Length headers")
            request.content_length = length
        elif lname == b"transfer-encoding":
            transfer_encoding = value.lower() if transfer_encoding is None else transfer_encoding + b"," + value.lower()
        elif lname == b"connection":
            request.connection_tokens |= _tokens(value)
        elif lname == b"host":
            if request.host is not None and request.host != value:
                raise HTTPError(400, "conflicting Host headers")
            request.host = value
        elif lname == b"upgrade":
            request.upgrade = value
        elif lname == b"cookie":
            request.cookies.append(value)
        elif lname == b"x-forwarded-for":
            request.forwarded_for.append(value)
        elif lname == b"accept":
            request.accept = value
        elif lname == b"authorization":
            request.authorization = value
    if transfer_encoding is not None:
        if request.content_length is not None:
            raise HTTPError(400, "both Transfer-Encoding and Content-Length")
        if [t.strip() for t in transfer_encoding.split(b",")] != [b"chunked"]:
            raise HTTPError(501, "only the chunked transfer coding is supported")
        request.chunked = True
    if request.version == b"HTTP/1.1":
        request.keep_alive = b"close" not in request.connection_tokens
        if request.host is None:
            raise HTTPError(400, "HTTP/1.1 requests need a Host header")
    else:
        request.keep_alive = b"keep-alive" in request.connection_tokens
    if request.upgrade is None or b"upgrade" not in request.connection_tokens or request.version != b"HTTP/1.1":
        request.upgrade = None
    return request


def parse_response(head: bytes) -> Response:
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    clean = _clean(head)
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(rest) < 3 or not rest[:3].isdigit() or (
            not clean and CONTROL.search(rest)):
        raise HTTPError(502, "the app sent a malformed response")
    response = Response()
    response.version = version
    response.status = int(rest[:3])
    response.status_line = rest
    try:
        response.headers = headers = _headers(lines[1:], clean)
    except HTTPError:
        raise HTTPError(502, "the app sent a malformed header") from None
    tokens: set[bytes] = set()
    transfer_encoding = None
    for _, lname, value in headers:
        if lname == b"content-length":
            if not value.isdigit():
                raise HTTPError(502, "the app sent a bad Content-Length")
            length = int(value)
            if response.content_length is not None and response.content_length != length:
                raise HTTPError(502, "the app sent conflicting Content-Length headers")
            response.content_length = length
        elif lname == b"transfer-encoding":
            transfer_encoding = value.lower() if transfer_encoding is None else transfer_encoding + b"," + value.lower()
        elif lname == b"connection":
            tokens |= _tokens(value)
    if transfer_encoding is not None:
        codings = [t.strip() for t in transfer_encoding.split(b",")]
        if codings[-1] != b"chunked":
            response.close = True  # delimited by close (RFC 9112 §6.3)
        else:
            response.chunked = True
        response.content_length = None
    if version == b"HTTP/1.1":
        response.close = response.close or b"close" in tokens
    else:
        response.close = response.close or b"keep-alive" not in tokens
    response.headers = [h for h in headers if h[1] not in tokens] if tokens - {b"close", b"keep-alive"} else headers
    return response


def check_header(name: bytes, value: bytes) -> None:
    """Refuse (400) a header the worker would write with a bad name or a control character in
    its value: whatever was copied into it, it can never split the response."""
    if not TOKEN.fullmatch(name) or CONTROL.search(value):
        raise HTTPError(400, "refused to send a header with control characters", "bad-header-value")


def simple_response(status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] = (),
                    close: bool = True) -> bytes:
    for name, value in ((b"Content-Type", content_type), *extra):
        check_header(name, value)
    reason = REASONS.get(status, "Unknown").encode()
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason), b"Content-Type: " + content_type + b"\r\n",
             b"Content-Length: %d\r\n" % len(body), b"Cache-Control: no-store\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in extra]
    if close:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines) + body


PROBLEM_BASE = "https://api.backend.ai/probs/"


def problem_page(status: int, slug: str, message: str, headers=(), close: bool = True) -> bytes:
    """An ``application/problem+json`` answer in Backend.AI's shape (``type``, ``title``, ``msg``)."""
    body = json.dumps({"type": PROBLEM_BASE + slug, "title": REASONS.get(status, "Error"), "msg": message,
                       "status": status}).encode()
    return simple_response(status, body, b"application/problem+json", list(headers), close=close)


# The manager's stylesheet (static/css/app.css) in brief: the worker serves no static files, and its
# error pages must look like the control panel's own (templates/404.html) and pass axe-core.
ERROR_STYLE = (
    ":root{--fg:#1d2330;--muted:#5d6577;--line:#dde1e8;--bg:#f6f7f9;--accent:#2f6fde}"
    "*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;"
    "color:var(--fg);background:var(--bg)}"
    ".topbar{padding:.6rem 1.2rem;background:#1d2330;color:#fff;font-weight:600}"
    "main{max-width:560px;margin:3rem auto;padding:0 1rem}"
    ".card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:1rem 1.2rem}"
    ".code{color:var(--muted);font-size:.9rem;letter-spacing:.05em;text-transform:uppercase;margin:0}"
    "h1{margin:.2rem 0 .6rem}a{color:var(--accent);font-weight:500}"
    "a:focus-visible{outline:3px solid var(--accent);outline-offset:2px}"
)
ERROR_CSP = (b"default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; "
             b"form-action 'none'; frame-ancestors 'none'")


def error_page(status: int, message: str, as_json: bool = False, reason: str = "", close: bool = True,
               back: str = "") -> bytes:
    """A small answer the user can read: a styled HTML page for browsers (with ``back``, the
    manager's web UI, as the way back), JSON for API clients (``Accept`` naming JSON, not HTML)."""
    title = f"{status} {REASONS.get(status, 'Error')}"
    if as_json:
        body = json.dumps({"status": status, "error": reason or REASONS.get(status, "error").lower().replace(" ", "-"),
                           "message": message}).encode()
        return simple_response(status, body, b"application/json", close=close)
    way_back = (f'<p><a href="{html.escape(back.rstrip("/"))}/ui/sessions/" id="way-back">Back to your sessions'
                f'</a></p>' if back else "")
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title} · app proxy</title>'
            f"<style>{ERROR_STYLE}</style></head><body><header class=\"topbar\">Backend.AI app proxy</header>"
            f'<main><section class="card"><p class="code">Error {status}</p><h1>{REASONS.get(status, "Error")}</h1>'
            f"<p>{html.escape(message)}</p>{way_back}</section></main></body></html>").encode()
    return simple_response(status, body, b"text/html; charset=utf-8", [(b"Content-Security-Policy", ERROR_CSP)],
                           close=close)
