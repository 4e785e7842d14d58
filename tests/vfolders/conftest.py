"""Fixtures for the folder tests: a storage host under a temporary VFOLDER_ROOT,
and helpers that drive the API the way the official client does."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest


@pytest.fixture(autouse=True)
def vfroot(settings, tmp_path):
    root = tmp_path / "vfroot"
    settings.VFOLDER_ROOT = root
    return root


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


def _target(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class Transfers:
    """Upload and download through the API with the test client."""

    def __init__(self, client, api):
        self.client = client
        self.api = api

    def request_upload(self, ref, path, size):
        resp = self.api.post(f"/folders/{ref}/request-upload", {"path": path, "size": size})
        assert resp.status_code == 200, resp.content
        body = resp.json()
        return _target(body["url"]) + "?token=" + body["token"]

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
        return _target(body["url"]) + "?token=" + body["token"]

    @staticmethod
    def body(response) -> bytes:
        return b"".join(response.streaming_content) if response.streaming else response.content

    def download(self, ref, path, **headers):
        return self.client.get(self.request_download(ref, path), **headers)


@pytest.fixture
def transfers(client, signed):
    def make(user):
        return Transfers(client, signed(user))

    return make
