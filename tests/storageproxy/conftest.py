"""The real storage proxy, started as a subprocess on free ports with temporary volumes.
No database: these tests talk HTTP to the daemon only."""
from __future__ import annotations

import uuid

import httpx
import pytest
from storageproxy_support import start_storage_proxy

SECRET = "test-secret-0123456789abcdef-0123456789abcdef"


@pytest.fixture
def secret() -> str:
    return SECRET


@pytest.fixture
def volumes(tmp_path):
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    return {"v1": v1, "v2": v2}


@pytest.fixture
def proxy(volumes, tmp_path):
    handle = start_storage_proxy(volumes, SECRET, log_path=tmp_path / "proxy.log",
                                 extra_args=("--max-chunk-size", "8m", "--max-upload-size", "1g"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def manager(proxy):
    with httpx.Client(base_url=proxy.manager_url, headers=proxy.auth_headers, timeout=30) as client:
        yield client


@pytest.fixture
def client(proxy):
    with httpx.Client(base_url=proxy.client_url, timeout=30) as http:
        yield http


def new_vfid(kind: str = "user", scope: uuid.UUID | None = None) -> str:
    return f"{kind}:{scope or uuid.uuid4()}/{uuid.uuid4().hex}"


@pytest.fixture
def folder(manager):
    """A new folder on v1: its vfid."""
    vfid = new_vfid()
    response = manager.post("/folder/create", json={"volume": "v1", "vfid": vfid})
    assert response.status_code == 204, response.text
    return vfid
