"""Upload and download tokens: HS256 JWTs signed with the secret the proxy shares with the
manager.  An upload token holds ``{op:"upload", volume, vfid, relpath, size, session, exp}``,
a download token ``{op:"download", volume, vfid, relpath, archive, format, exp}``."""
from __future__ import annotations

import time

import jwt

from storageproxy import errors

ALGORITHM = "HS256"
MAX_TOKEN_LENGTH = 4096


def issue(secret: str, claims: dict, lifetime: float) -> str:
    now = int(time.time())
    return jwt.encode({**claims, "iat": now, "exp": now + int(lifetime)}, secret, algorithm=ALGORITHM)


def verify(secret: str, token, op: str) -> dict:
    """The claims of a valid, unexpired token for ``op``; 403 ``generic-forbidden`` otherwise."""
    if not isinstance(token, str) or not token:
        raise errors.GenericForbidden("A transfer token is required (?token=)")
    if len(token) > MAX_TOKEN_LENGTH:
        raise errors.GenericForbidden("Invalid transfer token")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise errors.GenericForbidden("The transfer token has expired; request a new one") from None
    except jwt.InvalidTokenError:
        raise errors.GenericForbidden("Invalid transfer token") from None
    if not isinstance(claims, dict) or claims.get("op") != op:
        raise errors.GenericForbidden(f"This token is not for {op}s")
    return claims
