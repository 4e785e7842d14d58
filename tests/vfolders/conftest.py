"""Fixtures for the folder tests: the storage host ``local:volume1`` on the run's storage proxy
(``storage_proxy`` in tests/conftest.py), and helpers that drive the API the way the official
client does: the manager hands out a token and the proxy's client-API URL, and the bytes go to
the proxy directly."""
from __future__ import annotations

import httpx
import pytest


@pytest.fixture
def vfroot(storage_proxy):
    """The directory holding the proxy's volumes (``<vfroot>/<volume>``)."""
    return storage_proxy.root


@pytest.fixture
def host(db, vfroot):
    from vfolders import services

    return services.ensure_default_storage_host()


@pytest.fixture
def make_folder(host):
    from vfolders import services

    def make(user, name="data", **kwargs):
        return services.create_folder(user, name=name, **kwargs)

    return make


class Answer:
    """An httpx response read like a Django test response (``resp["Header"]``, ``.content``)."""

    streaming = False

    def __init__(self, response: httpx.Response):
        self.response = response
        self.status_code = response.status_code
        self.content = response.content
        self.headers = response.headers

    def __getitem__(self, name):
        return self.response.headers[name]

    def __contains__(self, name):
        return name in self.response.headers

    def get(self, name, default=None):
        return self.response.headers.get(name, default)

    def has_header(self, name):
        return name in self.response.headers

    def json(self):
        return self.response.json()


def _headers(extra: dict) -> dict:
    """Django test-client style keyword headers (``HTTP_UPLOAD_OFFSET``) as HTTP headers."""
    headers = {}
    for key, value in extra.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").title()] = value
        elif key == "content_type":
            headers["Content-Type"] = value
        elif key == "headers":
            headers.update(value)
    return headers


class ProxyClient:
    """Requests to the storage proxy's client API (absolute URLs), with the Django test client's
    calling conventions, so a transfer test reads as it did when the manager served them."""

    def __init__(self):
        self.http = httpx.Client(timeout=30, trust_env=False)

    def generic(self, method, url, data=b"", content_type=None, **extra):
        headers = _headers(extra)
        if content_type:
            headers["Content-Type"] = content_type
        return Answer(self.http.request(method, url, content=data or None, headers=headers))

    def get(self, url, **extra):
        return Answer(self.http.get(url, headers=_headers(extra)))

    def head(self, url, **extra):
        return Answer(self.http.head(url, headers=_headers(extra)))

    def post(self, url, data=b"", **extra):
        return self.generic("POST", url, data, **extra)

    def options(self, url, **extra):
        return Answer(self.http.options(url, headers=_headers(extra)))


class Transfers:
    """Upload and download as the official client does: ask the manager, talk to the proxy."""

    def __init__(self, api):
        self.client = ProxyClient()
        self.api = api

    def request_upload(self, ref, path, size):
        resp = self.api.post(f"/folders/{ref}/request-upload", {"path": path, "size": size})
        assert resp.status_code == 200, resp.content
        body = resp.json()
        return body["url"] + "?token=" + body["token"]

    def patch(self, target, offset, data, **headers):
        extra = {"HTTP_TUS_RESUMABLE": "1.0.0", "HTTP_UPLOAD_OFFSET": str(offset)}
        extra.update(headers)
        return self.client.generic("PATCH", target, data, content_type="application/offset+octet-stream", **extra)

    def head(self, target):
        return self.client.generic("HEAD", target, HTTP_TUS_RESUMABLE="1.0.0")

    def upload(self, ref, path, data: bytes, chunk: int = 16 * 2**20):
        target = self.request_upload(ref, path, len(data))
        offset = 0
        while offset < len(data):
            resp = self.patch(target, offset, data[offset:offset + chunk])
            assert resp.status_code == 204, resp.content
            offset = int(resp["Upload-Offset"])
        return target

    def request_download(self, ref, path, **extra):
        resp = self.api.post(f"/folders/{ref}/request-download", {"path": path, **extra})
        assert resp.status_code == 200, resp.content
        body = resp.json()
        return body["url"] + "?token=" + body["token"]

    @staticmethod
    def body(response) -> bytes:
        return response.content

    def download(self, ref, path, **headers):
        return self.client.get(self.request_download(ref, path), **headers)


@pytest.fixture
def transfers(signed):
    def make(user):
        return Transfers(signed(user))

    return make


@pytest.fixture
def repoint_proxy(storage_proxy, db):
    """Start another proxy on the same volumes with other options and make it the proxy ``local``
    (``repoint_proxy("--max-chunk-size", "8")``); stopped after the test."""
    from storageproxy_support import start_storage_proxy

    from vfolders.models import StorageProxy

    started = []

    def repoint(*args):
        volumes = {name: storage_proxy.root / name for name in storage_proxy.volumes}
        handle = start_storage_proxy(volumes, storage_proxy.secret, extra_args=args)
        started.append(handle)
        StorageProxy.objects.filter(name="local").update(manager_url=handle.manager_url, client_url=handle.client_url)
        return handle

    yield repoint
    for handle in started:
        handle.stop()
