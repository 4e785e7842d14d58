"""The benches' signed client for the manager's REST API (HMAC-signed like the official client's)."""
from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

from backendai import signing  # pure Python, no Django


class Api:
    def __init__(self, url: str, access_key: str, secret_key: str):
        self.url = url.rstrip("/")
        self.host = urlsplit(self.url).netloc
        self.access_key, self.secret_key = access_key, secret_key

    def call(self, method: str, target: str, body: dict | None = None) -> dict:
        """One signed request; its JSON answer (``{}`` when empty).  A status of 300 or more stops the bench."""
        data = json.dumps(body).encode() if body is not None else b""
        ctype = "application/json" if body is not None else "text/plain"
        headers = signing.signed_headers(self.access_key, self.secret_key, method, target, self.host, ctype)
        conn = http.client.HTTPConnection(self.host, timeout=120)
        try:
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        if resp.status >= 300:
            raise SystemExit(f"{method} {target} failed: {resp.status} {payload[:500]!r}")
        return json.loads(payload) if payload else {}
