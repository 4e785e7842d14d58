"""A proxy worker's status changes only through its door: ``Worker.move_to`` for a
row in hand, ``WORKER_MOVES`` for the heartbeat's update and the set-based writes
(``mark_silent_lost`` is built on the same map).  Every writer refuses a move the
map does not allow."""
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from appproxy import services
from appproxy.models import WORKER_MOVES, Worker, WorkerStatus
from backendai.daemons import IllegalStatusMove

pytestmark = pytest.mark.django_db

W = WorkerStatus
ILLEGAL = [(current, new) for current in W for new in W if current != new and not WORKER_MOVES.allows(current, new)]


@pytest.fixture
def token():
    return services.issue_token("tests")


def make_worker(name, status, heartbeat_age: float | None = 0.0):
    earlier = timezone.now() - timedelta(days=1)
    heartbeat = None if heartbeat_age is None else timezone.now() - timedelta(seconds=heartbeat_age)
    return Worker.objects.create(authority=name, status=status, status_changed=earlier,
                                 lost_at=earlier if status == W.LOST else None, last_heartbeat=heartbeat,
                                 advertised_host="127.0.0.1", api_endpoint=f"http://{name}:6130", secret="s" * 40,
                                 protocols=["http", "tcp"], port_range_start=40000, port_range_end=40009)


def unchanged(worker):
    row = Worker.objects.get(pk=worker.pk)
    return (row.status, row.status_changed, row.lost_at) == (worker.status, worker.status_changed, worker.lost_at)


def call(client, raw, method, path, data=None):
    return client.generic(method, f"/appproxy-api/v1/workers/{path}", json.dumps(data or {}),
                          content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")


def test_the_map_names_every_status_and_the_moves_the_code_makes():
    assert set(WORKER_MOVES.moves) == set(W.values)
    assert WORKER_MOVES.sources(W.LOST) == {W.ALIVE}
    assert WORKER_MOVES.sources(W.ALIVE) == {W.LOST, W.TERMINATED}
    assert WORKER_MOVES.sources(W.TERMINATED) == {W.ALIVE, W.LOST}
    assert ILLEGAL == [(W.TERMINATED, W.LOST)]


@pytest.mark.parametrize("current, new", ILLEGAL)
def test_the_door_refuses_every_move_the_map_does_not_allow(current, new):
    worker = make_worker("w1", current)
    with pytest.raises(IllegalStatusMove, match=f"proxy worker cannot move from {current} to {new}"):
        worker.move_to(new)
    with pytest.raises(IllegalStatusMove):
        WORKER_MOVES.move_fields(current, new, timezone.now())
    assert worker.status == current and unchanged(worker)


@pytest.mark.parametrize("status", [W.LOST, W.TERMINATED])
def test_mark_lost_workers_refuses_to_lose_a_worker_that_is_not_alive(status):
    stale = make_worker("w1", status, heartbeat_age=3600)
    never_seen = make_worker("w2", status, heartbeat_age=None)
    alive = make_worker("w3", W.ALIVE, heartbeat_age=3600)
    assert services.mark_lost_workers(timeout_seconds=30) == 1
    assert unchanged(stale) and unchanged(never_seen)
    assert Worker.objects.get(pk=alive.pk).status == W.LOST


def test_mark_lost_workers_loses_an_alive_worker_that_never_sent_a_heartbeat():
    make_worker("w1", W.ALIVE, heartbeat_age=None)
    fresh = make_worker("w2", W.ALIVE, heartbeat_age=1)
    assert services.mark_lost_workers(timeout_seconds=30) == 1
    lost = Worker.objects.get(authority="w1")
    assert lost.status == W.LOST and lost.lost_at == lost.status_changed
    assert unchanged(fresh)


def test_a_shutdown_refuses_to_end_a_worker_that_already_ended(client, token):
    ended = make_worker("w1", W.TERMINATED)
    assert call(client, token[1], "POST", "w1/shutdown").status_code == 204
    assert unchanged(ended)


@pytest.mark.parametrize("status", [W.ALIVE, W.LOST])
def test_a_shutdown_ends_a_worker_the_map_lets_end(client, token, status):
    make_worker("w1", status)
    assert call(client, token[1], "POST", "w1/shutdown").status_code == 204
    assert Worker.objects.get(authority="w1").status == W.TERMINATED


@pytest.mark.parametrize("status", [W.LOST, W.TERMINATED])
def test_a_heartbeat_revives_every_status_the_map_lets_come_back(client, token, status):
    make_worker("w1", status, heartbeat_age=3600)
    assert call(client, token[1], "POST", "w1/heartbeat").status_code == 200
    worker = Worker.objects.get(authority="w1")
    assert (worker.status, worker.lost_at) == (W.ALIVE, None)
    assert worker.status_changed > timezone.now() - timedelta(minutes=1)


@pytest.mark.parametrize("status", [W.LOST, W.TERMINATED])
def test_a_registration_revives_every_status_the_map_lets_come_back(client, token, status):
    make_worker("w1", status, heartbeat_age=3600)
    response = call(client, token[1], "PUT", "w1", {"frontend_mode": "port", "advertised_host": "127.0.0.1",
                                                     "api_endpoint": "http://127.0.0.1:6130",
                                                     "port_range": [40000, 40009]})
    assert response.status_code == 200, response.content
    worker = Worker.objects.get(authority="w1")
    assert (worker.status, worker.lost_at) == (W.ALIVE, None)


def test_a_heartbeat_of_an_alive_worker_is_no_move(client, token):
    alive = make_worker("w1", W.ALIVE, heartbeat_age=5)
    assert call(client, token[1], "POST", "w1/heartbeat").status_code == 200
    assert unchanged(alive)


def test_a_set_based_move_skips_the_rows_the_map_refuses():
    workers = [make_worker(f"w{index}", status) for index, status in enumerate(W)]
    assert WORKER_MOVES.update(Worker.objects.all(), W.LOST) == 1
    assert [w.authority for w in workers if not unchanged(w)] == ["w0"]
    assert Worker.objects.get(authority="w0").status == W.LOST
