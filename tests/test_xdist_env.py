"""tests/xdist_env.py: what each pytest-xdist worker gets of its own."""
from __future__ import annotations

from xdist_env import _apply


def test_it_leaves_a_run_without_workers_alone():
    environ = {"REDIS_URL": "redis://127.0.0.1:6379/14", "BACKEND_DATA_DIR": "/srv/var/test"}
    _apply(environ)
    assert environ == {"REDIS_URL": "redis://127.0.0.1:6379/14", "BACKEND_DATA_DIR": "/srv/var/test"}


def test_it_gives_each_worker_the_next_redis_database_and_a_data_directory_of_its_own():
    first = {"PYTEST_XDIST_WORKER": "gw0", "REDIS_URL": "redis://127.0.0.1:6379/8", "BACKEND_DATA_DIR": "/v/test/"}
    second = {"PYTEST_XDIST_WORKER": "gw1", "REDIS_URL": "redis://127.0.0.1:6379/8", "BACKEND_DATA_DIR": "/v/test"}
    _apply(first)
    _apply(second)
    assert (first["REDIS_URL"], first["BACKEND_DATA_DIR"]) == ("redis://127.0.0.1:6379/8", "/v/test-gw0")
    assert (second["REDIS_URL"], second["BACKEND_DATA_DIR"]) == ("redis://127.0.0.1:6379/9", "/v/test-gw1")


def test_it_counts_down_past_the_last_redis_database():
    environ = {"PYTEST_XDIST_WORKER": "gw2", "REDIS_URL": "redis://127.0.0.1:6379/14"}
    _apply(environ)
    assert environ["REDIS_URL"] == "redis://127.0.0.1:6379/12"


def test_it_keeps_the_in_memory_layers_and_a_url_it_cannot_read():
    environ = {"PYTEST_XDIST_WORKER": "gw1", "REDIS_URL": "rediss://user:pw@host:6380/3?ssl=1"}
    _apply(environ)
    assert environ == {"PYTEST_XDIST_WORKER": "gw1", "REDIS_URL": "rediss://user:pw@host:6380/3?ssl=1"}
    bare = {"PYTEST_XDIST_WORKER": "gw1"}
    _apply(bare)
    assert bare == {"PYTEST_XDIST_WORKER": "gw1"}
