"""The Backend.AI request-signing scheme (HMAC over a canonical request with a
three-step derived key).  Pure Python with no Django imports, so the agent
daemon, the proxy worker and test harnesses can share it.

String to sign, lines joined by newlines::

    METHOD
    raw request target including the query string, exactly as sent
    raw Date (or X-BackendAI-Date) header value
    host:<Host header>
    content-type:<media type without parameters, lower case>
    x-backendai-version:<X-BackendAI-Version header>
    hex digest of the empty body (the body is never signed since v4.20181215)

Key chain: k1 = HMAC(secret, YYYYMMDD of the request date), k2 = HMAC(k1, host),
signature = hex(HMAC(k2, string to sign)).
"""
from __future__ import annotations

import email.utils
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

API_VERSIONS: tuple[str, ...] = (
    "v4.20181215",
    "v4.20190115",
    "v4.20190315",
    "v4.20190615",
    "v5.20191215",
    "v6.20200815",
    "v6.20210815",
    "v6.20220315",
    "v6.20220615",
    "v6.20230315",
    "v7.20230615",
    "v8.20240315",
    "v8.20240915",
)
LATEST_API_VERSION = API_VERSIONS[-1]
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CLOCK_SKEW = timedelta(minutes=15)
AUTH_SCHEMES = ("BackendAI", "Sorna")


class MalformedAuthorization(ValueError):
    """The Authorization header or one of its parameters cannot be parsed."""


@dataclass(frozen=True)
class Credential:
    scheme: str
    hash_name: str
    access_key: str
    signature: str


def parse_authorization(header: str) -> Credential:
    """Parse ``BackendAI signMethod=HMAC-SHA256, credential=AK:SIG``."""
    if not header or " " not in header.strip():
        raise MalformedAuthorization("Malformed authorization header")
    scheme, _, rest = header.strip().partition(" ")
    if scheme not in AUTH_SCHEMES:
        raise MalformedAuthorization(f"Unsupported authorization scheme {scheme!r}")
    params: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key.strip() or not value.strip():
            raise MalformedAuthorization("Malformed authorization parameters")
        params[key.strip()] = value.strip()
    sign_method = params.get("signMethod")
    credential = params.get("credential")
    if not sign_method or not credential:
        raise MalformedAuthorization("Missing signMethod or credential")
    mac, _, hash_name = sign_method.partition("-")
    if mac.upper() != "HMAC" or not hash_name:
        raise MalformedAuthorization(f"Unsupported sign method {sign_method!r}")
    hash_name = hash_name.lower()
    if hash_name not in hashlib.algorithms_guaranteed or hash_name.startswith("shake"):
        raise MalformedAuthorization(f"Unsupported hash algorithm {hash_name!r}")
    access_key, sep, signature = credential.partition(":")
    if not sep or not access_key or not signature:
        raise MalformedAuthorization("Malformed credential")
    return Credential(scheme=scheme, hash_name=hash_name, access_key=access_key, signature=signature.lower())


def parse_request_date(value: str) -> datetime:
    """ISO 8601 (what the official client sends) or RFC 822; naive means UTC."""
    if not value:
        raise MalformedAuthorization("Missing date header")
    text = value.strip()
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            parsed = None
    if parsed is None:
        raise MalformedAuthorization("Malformed date header")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def media_type(content_type: str | None) -> str:
    """The media type without parameters, lower case; absent means octet-stream."""
    if not content_type:
        return DEFAULT_CONTENT_TYPE
    return content_type.split(";", 1)[0].strip().lower() or DEFAULT_CONTENT_TYPE


def string_to_sign(
    method: str,
    request_target: str,
    date_value: str,
    host: str,
    content_type: str,
    api_version: str,
    hash_name: str = "sha256",
) -> str:
    body_hash = hashlib.new(hash_name, b"").hexdigest()
    return (
        f"{method.upper()}\n{request_target}\n{date_value}\nhost:{host}\n"
        f"content-type:{content_type.lower()}\nx-backendai-version:{api_version}\n{body_hash}"
    )


def sign(
    secret_key: str,
    method: str,
    request_target: str,
    date_value: str,
    host: str,
    content_type: str,
    api_version: str,
    hash_name: str = "sha256",
    request_date: datetime | None = None,
) -> str:
    """The hex signature of a request, as the official client computes it."""
    when = request_date or parse_request_date(date_value)
    digest = getattr(hashlib, hash_name, None) or (lambda data=b"": hashlib.new(hash_name, data))
    k1 = hmac.new(secret_key.encode(), when.strftime("%Y%m%d").encode(), digest).digest()
    k2 = hmac.new(k1, host.encode(), digest).digest()
    sts = string_to_sign(method, request_target, date_value, host, content_type, api_version, hash_name)
    return hmac.new(k2, sts.encode(), digest).hexdigest()


def signature_matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.lower().encode())


def within_skew(request_date: datetime, now: datetime | None = None, skew: timedelta = MAX_CLOCK_SKEW) -> bool:
    now = now or datetime.now(timezone.utc)
    return abs(now - request_date) <= skew


def authorization_header(access_key: str, signature: str, hash_name: str = "sha256") -> str:
    return f"BackendAI signMethod=HMAC-{hash_name.upper()}, credential={access_key}:{signature}"


def signed_headers(
    access_key: str,
    secret_key: str,
    method: str,
    request_target: str,
    host: str,
    content_type: str = "application/json",
    api_version: str = LATEST_API_VERSION,
    now: datetime | None = None,
) -> dict[str, str]:
    """Headers for a signed request; used by the agent daemon and by tests."""
    when = now or datetime.now(timezone.utc)
    date_value = when.isoformat()
    signature = sign(secret_key, method, request_target, date_value, host, media_type(content_type), api_version)
    return {
        "Date": date_value,
        "X-BackendAI-Version": api_version,
        "Content-Type": content_type,
        "Authorization": authorization_header(access_key, signature),
    }


def parse_version(value: str) -> tuple[int, str] | None:
    """``v8.20240915`` -> (8, "20240915"); None when not a listed version."""
    if value not in API_VERSIONS:
        return None
    major, _, date = value[1:].partition(".")
    return int(major), date


class ClockSkewError(MalformedAuthorization):
    """The request date is further than the allowed skew from the server's clock."""


class SignatureMismatch(Exception):
    """The signature does not match the request and the keypair's secret."""


@dataclass(frozen=True)
class SignedRequest:
    """What the server reads off a request to verify it."""

    method: str
    target: str
    date_value: str
    host: str
    content_type: str | None
    api_version: str


def verify(secret_key: str, credential: Credential, request: SignedRequest, now: datetime | None = None) -> None:
    """Server-side check of a signed request; raises on any failure."""
    request_date = parse_request_date(request.date_value)
    if not within_skew(request_date, now):
        raise ClockSkewError("Date/time sync error")
    expected = sign(
        secret_key, request.method, request.target, request.date_value, request.host,
        media_type(request.content_type), request.api_version, credential.hash_name, request_date,
    )
    if not signature_matches(expected, credential.signature):
        raise SignatureMismatch("Signature mismatch")
