"""A keypair's last use (``last_used``, ``num_queries``) is written at most once per
``KEYPAIR_USE_INTERVAL`` seconds per process, with the calls in between added up: a write per
signed call serialised a keypair's concurrent calls on its row (bench/api_reads)."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Keypair
from accounts.services import keypairs

pytestmark = pytest.mark.django_db


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(keypairs.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(keypairs, "_uses", {})
    return now


def test_it_writes_a_keypairs_use_once_per_interval_and_adds_up_the_calls_in_between(settings, owner, clock):
    settings.KEYPAIR_USE_INTERVAL = 1
    keypair = owner.main_keypair
    with CaptureQueriesContext(connection) as first:
        keypairs.record_keypair_use(keypair)
    with CaptureQueriesContext(connection) as within:
        keypairs.record_keypair_use(keypair)
        keypairs.record_keypair_use(keypair)
    assert (len(first), len(within)) == (1, 0)
    assert Keypair.objects.get(pk=keypair.pk).num_queries == 1
    clock[0] += 1.0
    keypairs.record_keypair_use(keypair)
    stored = Keypair.objects.get(pk=keypair.pk)
    assert stored.num_queries == 4 and stored.last_used is not None


def test_it_writes_every_call_when_the_interval_is_zero(settings, owner, clock):
    settings.KEYPAIR_USE_INTERVAL = 0
    for _ in range(3):
        keypairs.record_keypair_use(owner.main_keypair)
    assert Keypair.objects.get(pk=owner.main_keypair.pk).num_queries == 3
