"""The manager's side of the storage proxies: the embedded proxy ``local`` from the settings, its
health (ALIVE, LOST, ALIVE again) recorded by the periodic check and shown in the admin, a proxy
that does not answer (or refuses the manager's secret) answered 503 problem+json with nothing
changed, and the secret never shown back."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from helpers import slug, tree_snapshot

pytestmark = pytest.mark.django_db


def _rows():
    from vfolders.models import QuotaScope, VFolder

    return (sorted(VFolder.objects.values_list("id", "name", "status")),
            sorted(QuotaScope.objects.values_list("host_id", "quota_scope_id", "limit_bytes")))


def _files(root):
    """The folders' files under the volumes (the proxy's own bookkeeping left out)."""
    return {path: entry for path, entry in tree_snapshot(root).items()
            if "/.scopes" not in path and "/.staging" not in path and path.count("/") > str(root).count("/") + 1}


def test_the_embedded_proxy_comes_from_the_settings_and_reports_its_volumes(host, storage_proxy):
    from vfolders.models import StorageProxy

    proxy = StorageProxy.objects.get(name="local")
    assert (proxy.manager_url, proxy.client_url) == (storage_proxy.manager_url, storage_proxy.client_url)
    assert proxy.status == "alive" and proxy.last_seen is not None and proxy.version
    assert {v["name"] for v in proxy.volumes} == {"volume1", "volume2", "volume3"}
    assert host.path == str(storage_proxy.root / "volume1")  # kept for mounts: no call per mount


def test_the_hosts_answer_takes_the_usage_from_the_proxy(signed, owner, host):
    info = signed(owner).get("/folders/_/hosts").json()
    assert info["default"] == "local:volume1" and info["allowed"] == ["local:volume1"]
    usage = info["volume_info"]["local:volume1"]["usage"]["percentage"]
    assert isinstance(usage, float) and 0 <= usage <= 100


@pytest.fixture
def stopped(storage_proxy):
    """The run's storage proxy killed for the test (and started again after it)."""
    storage_proxy.kill()
    yield storage_proxy
    storage_proxy.start()


def test_creating_a_folder_on_a_proxy_that_does_not_answer_is_503_and_leaves_no_row(signed, owner, host, stopped):
    before, files_before = _rows(), _files(stopped.root)
    resp = signed(owner).post("/folders", {"name": "fresh", "host": "local:volume1"})
    assert resp.status_code == 503 and slug(resp) == "service-unavailable", resp.content
    assert resp["Content-Type"].startswith("application/problem+json")
    assert "storage proxy 'local'" in resp.json()["msg"]
    assert _rows() == before and _files(stopped.root) == files_before


@pytest.fixture
def ready_folder(owner, make_folder):
    folder = make_folder(owner, "kept")
    (folder.path / "a.txt").write_bytes(b"a")
    return folder


@pytest.mark.parametrize("method,path,body", [
    ("get", "/folders/kept/files", None),
    ("get", "/folders/kept", None),
    ("post", "/folders/kept/mkdir", {"path": "new"}),
    ("post", "/folders/kept/request-upload", {"path": "b.txt", "size": 3}),
    ("post", "/folders/kept/request-download", {"path": "a.txt"}),
    ("post", "/folders/kept/rename-file", {"target_path": "a.txt", "new_name": "b.txt"}),
    ("post", "/folders/kept/move-file", {"src": "a.txt", "dst": "c.txt"}),
    ("delete", "/folders/kept/delete-files", {"files": ["a.txt"]}),
    ("post", "/folders/kept/clone", {"target_name": "copy"}),
])
def test_every_file_operation_on_a_stopped_proxy_is_503_and_changes_nothing(
        signed, owner, ready_folder, storage_proxy, method, path, body):
    from vfolders.models import VFolder

    VFolder.objects.filter(pk=ready_folder.pk).update(cloneable=True)
    api = signed(owner)
    before, files_before = _rows(), _files(storage_proxy.root)
    storage_proxy.kill()
    try:
        resp = getattr(api, method)(path, body) if body is not None else getattr(api, method)(path)
    finally:
        storage_proxy.start()
    assert resp.status_code == 503 and slug(resp) == "service-unavailable", resp.content
    assert _rows() == before and _files(storage_proxy.root) == files_before


def test_proxy_health_goes_alive_lost_alive_and_the_admin_shows_it(client, superadmin, host, storage_proxy,
                                                                     settings, signed, owner):
    from vfolders import services, tasks
    from vfolders.models import StorageProxy

    client.force_login(superadmin)
    assert StorageProxy.objects.get(name="local").status == "alive"
    page = client.get("/admin/vfolders/storageproxy/")
    assert page.status_code == 200 and b"proxy-health proxy-ok" in page.content and b"Alive" in page.content

    storage_proxy.kill()
    try:
        settings.STORAGE_PROXY_LOST_TIMEOUT = 30
        tasks.check_storage_proxies()  # seen a moment ago: not LOST yet, the error is kept
        proxy = StorageProxy.objects.get(name="local")
        assert proxy.status == "alive" and proxy.last_error
        StorageProxy.objects.filter(name="local").update(last_seen=timezone.now() - timedelta(seconds=31))
        assert tasks.check_storage_proxies() == {"alive": 0, "lost": 1, "unknown": 0}
        assert StorageProxy.objects.get(name="local").status == "lost"
        page = client.get("/admin/vfolders/storageproxy/")
        assert b"proxy-health proxy-bad" in page.content and b"Lost" in page.content
        hosts = client.get("/admin/vfolders/storagehost/")
        assert b"proxy-health proxy-bad" in hosts.content
    finally:
        storage_proxy.start()
    # a LOST proxy is not called until the check sees it again, even though it is back
    resp = signed(owner).post("/folders", {"name": "later", "host": "local:volume1"})
    assert resp.status_code == 503 and slug(resp) == "service-unavailable"
    assert services.check_all_proxies() == {"alive": 1, "lost": 0, "unknown": 0}
    assert StorageProxy.objects.get(name="local").status == "alive"
    assert signed(owner).post("/folders", {"name": "later", "host": "local:volume1"}).status_code == 201
    assert b"proxy-health proxy-ok" in client.get("/admin/vfolders/storageproxy/").content


def test_the_check_runs_on_beat_like_the_other_reconcilers(settings):
    schedule = settings.CELERY_BEAT_SCHEDULE["vfolders.check_storage_proxies"]
    assert schedule["task"] == "vfolders.tasks.check_storage_proxies" and schedule["schedule"] <= 30


def test_a_proxy_that_refuses_the_managers_secret_is_503_not_an_auth_error(signed, owner, host):
    from vfolders.models import StorageProxy

    StorageProxy.objects.filter(name="local").update(secret="not-the-secret-at-all")
    before = _rows()
    resp = signed(owner).post("/folders", {"name": "fresh", "host": "local:volume1"})
    assert resp.status_code == 503 and slug(resp) == "service-unavailable"
    assert "secret" in resp.json()["msg"]
    assert _rows() == before


def test_a_host_on_an_unknown_proxy_is_503(signed, superadmin, host):
    from vfolders import services
    from vfolders.models import StorageHost

    StorageHost.objects.create(name="elsewhere:vol")
    services.grant_host_permissions(superadmin.domain, "elsewhere:vol")
    resp = signed(superadmin).post("/folders", {"name": "fresh", "host": "elsewhere:vol"})
    assert resp.status_code == 503 and slug(resp) == "service-unavailable"
    assert "elsewhere" in resp.json()["msg"]


def test_the_proxys_errors_come_back_as_the_same_api_errors(signed, owner, make_folder):
    folder = make_folder(owner, "kept")
    (folder.path / "d").mkdir()
    api = signed(owner)
    exists = api.post("/folders/kept/mkdir", {"path": "d"})
    missing = api.get("/folders/kept/files?path=nope")
    assert exists.status_code == 400 and slug(exists) == "vfolder-operation-failed"
    assert missing.status_code == 404 and slug(missing) == "object-not-found"
    assert missing.json()["title"] == "No such file or directory."


def test_the_admin_never_shows_the_secret_and_keeps_it_when_left_empty(client, superadmin, host):
    from vfolders.models import StorageProxy

    client.force_login(superadmin)
    secret = StorageProxy.objects.get(name="local").secret
    page = client.get("/admin/vfolders/storageproxy/local/change/")
    assert page.status_code == 200 and secret.encode() not in page.content
    proxy = StorageProxy.objects.get(name="local")
    resp = client.post("/admin/vfolders/storageproxy/local/change/", {
        "manager_url": proxy.manager_url, "client_url": proxy.client_url, "secret": "", "ssl_verify": "on"})
    assert resp.status_code == 302, resp.content
    assert StorageProxy.objects.get(name="local").secret == secret
    assert secret.encode() not in client.get("/admin/vfolders/storageproxy/").content
    added = client.post("/admin/vfolders/storageproxy/add/", {
        "name": "other", "manager_url": "http://127.0.0.1:1", "client_url": "http://127.0.0.1:2", "secret": ""})
    assert added.status_code == 200 and b"needs its secret" in added.content
    assert not StorageProxy.objects.filter(name="other").exists()


def test_transfer_urls_and_the_pages_policy_follow_the_proxys_client_url(signed, client, owner, make_folder):
    """Behind a reverse proxy clients reach the client API elsewhere: the admin's ``client_url`` is what
    request-upload/-download answer and what the folder page lets its script connect to."""
    from vfolders.models import StorageProxy

    folder = make_folder(owner, "kept")
    (folder.path / "a.txt").write_bytes(b"a")
    StorageProxy.objects.filter(name="local").update(client_url="https://files.example.com/storage")
    api = signed(owner)
    upload = api.post("/folders/kept/request-upload", {"path": "b.txt", "size": 1}).json()
    download = api.post("/folders/kept/request-download", {"path": "a.txt"}).json()
    assert upload["url"] == "https://files.example.com/storage/upload" and upload["token"]
    assert download["url"] == "https://files.example.com/storage/download" and download["token"]
    client.force_login(owner)
    policy = client.get(f"/ui/folders/{folder.id}/")["Content-Security-Policy"]
    connect = next(d for d in policy.split(";") if d.strip().startswith("connect-src")).split()
    assert "https://files.example.com" in connect
