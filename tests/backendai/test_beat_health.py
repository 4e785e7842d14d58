"""Beat never dies silently: its scheduler records each tick and retries a refusing database;
/readyz, ``manage.py healthcheck`` and the admin's cluster overview report a stale beat."""
from __future__ import annotations

import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from backendai.models import Heartbeat
from helpers import require

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120  # seconds; every wait below ends as soon as its condition holds


def set_beat_age(seconds: float) -> None:
    Heartbeat.objects.update_or_create(name="beat", defaults={
        "last_seen": timezone.now() - timedelta(seconds=seconds), "pid": 4242, "host": "beat-host"})


def database_url() -> str:
    from django.db import connection

    settings_dict = connection.settings_dict
    if connection.vendor == "postgresql":
        password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
        return (f"postgres://{settings_dict.get('USER') or 'postgres'}{password}@{settings_dict.get('HOST') or '127.0.0.1'}"
                f":{settings_dict.get('PORT') or 5432}/{settings_dict['NAME']}")
    return f"sqlite:///{settings_dict['NAME']}"


def process_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith(("PYTEST", "DJANGO_ALLOW"))}
    env.update(BACKEND_DATA_DIR=str(tmp_path), PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), **extra)
    return env


# --- the scheduler ----------------------------------------------------------------------------------

# transaction=True: django-celery-beat closes old connections as a real beat does, which a test's
# wrapping transaction would not survive
@pytest.mark.django_db(transaction=True)
def test_the_scheduler_records_its_tick_in_the_database():
    from celery import Celery

    from backendai.beat import ResilientDatabaseScheduler

    app = Celery("beat-test", broker="memory://", set_as_current=False)
    app.conf.beat_schedule = {"probe": {"task": "beat-test.probe", "schedule": 60.0}}
    before = timezone.now()
    scheduler = ResilientDatabaseScheduler(app=app)
    try:
        interval = scheduler.tick()
    finally:
        scheduler.close()
    assert interval is not None and interval >= 0
    beat = Heartbeat.objects.get(name="beat")
    assert beat.last_seen >= before and beat.pid == os.getpid() and beat.host == socket.gethostname()
    from django_celery_beat.models import PeriodicTask

    assert PeriodicTask.objects.filter(name="probe", task="beat-test.probe").exists()


# --- /readyz --------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_readyz_is_healthy_with_a_fresh_beat(client, settings):
    set_beat_age(1)
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True and body["checks"]["redis"]["ok"] is True
    beat = body["checks"]["beat"]
    assert beat["ok"] is True and 0 <= beat["age"] < settings.BEAT_MAX_AGE
    assert beat["max_age"] == settings.BEAT_MAX_AGE and beat["pid"] == 4242 and beat["host"] == "beat-host"


@pytest.mark.django_db
def test_readyz_is_unhealthy_when_the_beat_is_older_than_beat_max_age(client, settings, caplog):
    settings.BEAT_MAX_AGE = 20
    set_beat_age(45)
    with caplog.at_level(logging.INFO, logger="django.request"):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert not [r for r in caplog.records if r.name == "django.request"]  # a probe's answer, not a server error
    body = response.json()
    assert body["status"] == "unhealthy" and body["failing"] == ["beat"]
    beat = body["checks"]["beat"]
    assert beat["ok"] is False and beat["age"] >= 45 and "BEAT_MAX_AGE" in beat["error"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_readyz_is_unhealthy_when_beat_never_ticked(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    beat = response.json()["checks"]["beat"]
    assert beat["ok"] is False and beat["age"] is None and "never" in beat["error"]


# --- manage.py healthcheck ----------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_the_healthcheck_command_exits_0_when_healthy_and_1_naming_a_stale_beat(tmp_path):
    def healthcheck():
        return subprocess.run([sys.executable, "manage.py", "healthcheck"], cwd=ROOT, capture_output=True, text=True,
                              timeout=WAIT, env=process_env(tmp_path, DATABASE_URL=database_url(), BEAT_MAX_AGE="20"))

    set_beat_age(2)
    healthy = healthcheck()
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "beat: ok" in healthy.stdout and "database: ok" in healthy.stdout

    set_beat_age(300)
    stale = healthcheck()
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert re.search(r"^beat: UNHEALTHY: beat's last tick is 3\d\d s old \(BEAT_MAX_AGE is 20 s\)", stale.stdout, re.M)
    assert "database: ok" in stale.stdout
    assert "unhealthy: beat" in stale.stderr


# --- the admin's cluster overview -----------------------------------------------------------------

@pytest.mark.django_db
def test_the_cluster_overview_shows_the_beat_state_red_when_stale(client, superadmin, settings):
    client.force_login(superadmin)
    url = reverse("admin:compute_sessions_cluster_overview")

    set_beat_age(3)
    page = client.get(url)
    assert page.context["beat"]["ok"] is True
    html = page.content.decode()
    assert 'class="beat-state beat-ok"' in html and "Beat: ticking" in html and "pid 4242 on beat-host" in html

    set_beat_age(settings.BEAT_MAX_AGE + 60)
    page = client.get(url)
    assert page.context["beat"]["ok"] is False
    html = page.content.decode()
    assert 'class="beat-state beat-stale"' in html and "Beat: unhealthy" in html


# --- a real beat process against a database that refuses it first ---------------------------------

class RefusingForwarder:
    """A TCP forwarder to the database that resets every connection for ``refuse_for`` seconds
    and until ``until()`` holds (so the beat surely met the refusal), then forwards."""

    def __init__(self, target: tuple[str, int], refuse_for: float, until):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.refuse_until = time.monotonic() + refuse_for
        self.until = until
        self.refused = 0
        self.forwarding_since = None
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if time.monotonic() < self.refuse_until or not self.until():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                client.close()
                self.refused += 1
                continue
            if self.forwarding_since is None:
                self.forwarding_since = timezone.now()
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        self.listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass
        self._thread.join(timeout=5)


@pytest.mark.django_db(transaction=True)
def test_a_beat_started_while_the_database_refuses_it_keeps_retrying_and_then_ticks(tmp_path):
    from django.db import connection

    require(connection.vendor == "postgresql", "PostgreSQL (the test database) for the refusing-database test")
    target = (connection.settings_dict.get("HOST") or "127.0.0.1", int(connection.settings_dict.get("PORT") or 5432))
    log_path = tmp_path / "beat.log"
    log_path.touch()

    def log_text():
        return log_path.read_text(errors="replace")

    # Refused for 6 s and until the scheduler itself has failed (a connection pool may absorb
    # a short refusal by retrying on its own).
    forwarder = RefusingForwarder(target, refuse_for=6, until=lambda: "beat: database error during" in log_text())
    url = database_url().replace(f"@{target[0]}:{target[1]}/", f"@127.0.0.1:{forwarder.port}/")
    assert str(forwarder.port) in url
    with open(log_path, "wb") as log_file:
        beat = subprocess.Popen([sys.executable, "-m", "celery", "-A", "backendai.celery", "beat", "--loglevel=INFO",
                                 "--schedule", str(tmp_path / "beat-schedule")],
                                cwd=ROOT, env=process_env(tmp_path, DATABASE_URL=url), stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def ticks_after(moment):
        from django.db import close_old_connections

        close_old_connections()
        return moment is not None and Heartbeat.objects.filter(name="beat", pid=beat.pid, last_seen__gt=moment).first()

    def wait_for(predicate, what):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            assert beat.poll() is None, f"beat exited ({beat.returncode}) waiting for {what}\n{log_text()}"
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what} (refused {forwarder.refused})\n{log_text()}")

    try:
        first = wait_for(lambda: ticks_after(forwarder.forwarding_since), "beat's first recorded tick")
        assert forwarder.refused >= 1
        assert "beat: the database answers again" in log_text(), log_text()
        # and it goes on ticking
        wait_for(lambda: ticks_after(first.last_seen), "a later tick")
        assert beat.poll() is None
    finally:
        if beat.poll() is None:
            beat.send_signal(signal.SIGTERM)
            try:
                beat.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(beat.pid, signal.SIGKILL)
                beat.wait(timeout=10)
        forwarder.close()
        from django.db import connections

        connections.close_all()
