"""``backendai_storage_proxy_count{status}``: the storage proxies by the status the manager's
checks gave them, read from the database at scrape time (the ``BackendAIStorageProxyLost`` alert)."""
from __future__ import annotations

import pytest

from backendai.metrics import DatabaseCollector, exposition
from vfolders.models import ProxyStatus, StorageProxy

pytestmark = pytest.mark.django_db


def make_proxy(name: str, status: str) -> StorageProxy:
    return StorageProxy.objects.create(name=name, manager_url="http://127.0.0.1:6022", secret="s" * 32,
                                       status=status)


def test_it_counts_the_storage_proxies_by_status():
    make_proxy("sp-1", ProxyStatus.ALIVE)
    make_proxy("sp-2", ProxyStatus.ALIVE)
    make_proxy("sp-3", ProxyStatus.LOST)
    make_proxy("sp-4", ProxyStatus.UNKNOWN)
    family = {f.name: f for f in DatabaseCollector().collect()}["backendai_storage_proxy_count"]
    assert {s.labels["status"]: s.value for s in family.samples} == {"alive": 2, "lost": 1, "": 1}


def test_the_exposition_holds_the_gauge_and_no_secret():
    make_proxy("sp-lost", ProxyStatus.LOST)
    text = exposition().decode()
    assert 'backendai_storage_proxy_count{status="lost"} 1.0' in text
    assert "s" * 32 not in text


def test_no_proxy_means_no_sample():
    family = {f.name: f for f in DatabaseCollector().collect()}["backendai_storage_proxy_count"]
    assert family.samples == []
