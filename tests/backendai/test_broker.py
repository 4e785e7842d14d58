"""The embedded mode's Celery broker (backendai/broker.py): kombu's SQLAlchemy transport on a
SQLite file, used by several processes at once; a row that is not a message is dropped with a
log line and never stops the consumer."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from kombu import Connection

from helpers import stop_process

ROOT = Path(__file__).resolve().parents[2]
TRANSPORT = "backendai.broker:Transport"
QUEUE = "hammer"
PER_PRODUCER = 500
WAIT = 120  # seconds: generous on a loaded 2-core machine, the loops stop as soon as they are done

# One producer process: COUNT messages whose payload carries its own checksum; some are large
# (64 KiB) so that writes take long enough to overlap with the reader.
PRODUCER = r"""
import hashlib, os, sys
from kombu import Connection
url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Connection(url, transport="backendai.broker:Transport") as conn:
    queue = conn.SimpleQueue("hammer")
    for seq in range(count):
        data = os.urandom(32 * 1024 if seq % 25 == 0 else 16 + seq % 300).hex()
        queue.put({"producer": name, "seq": seq, "data": data,
                   "sha256": hashlib.sha256(data.encode()).hexdigest()})
    queue.close()
print("done", name, count)
"""


def broker_url(path: Path) -> str:
    return f"sqlite:///{path}"


def insert_raw(path: Path, queue: str, payload: str) -> int:
    """A row written behind the transport's back (what a broken or foreign writer could leave)."""
    db = sqlite3.connect(path, timeout=30)
    try:
        (queue_id,) = db.execute("SELECT id FROM kombu_queue WHERE name = ?", (queue,)).fetchone()
        cursor = db.execute("INSERT INTO kombu_message (queue_id, payload, visible, version) VALUES (?, ?, 1, 1)",
                            (queue_id, payload))
        db.commit()
        return cursor.lastrowid
    finally:
        db.close()


def test_two_producers_and_a_consumer_never_lose_or_corrupt_a_message(tmp_path):
    path = tmp_path / "broker.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with Connection(broker_url(path), transport=TRANSPORT) as conn:
        queue = conn.SimpleQueue(QUEUE)  # declared before the producers start: nothing is routed nowhere
        producers = [subprocess.Popen([sys.executable, "-c", PRODUCER, broker_url(path), name, str(PER_PRODUCER)],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for name in ("p1", "p2")]
        seen: dict[tuple[str, int], str] = {}
        duplicates, corrupt = [], []
        deadline = time.monotonic() + WAIT
        try:
            while len(seen) < 2 * PER_PRODUCER and time.monotonic() < deadline:
                try:
                    message = queue.get(block=True, timeout=1)
                except queue.Empty:
                    if all(p.poll() is not None and p.returncode != 0 for p in producers):
                        break  # both died: the assertions below say why
                    continue
                body = message.payload
                message.ack()
                key = (body["producer"], body["seq"])
                if key in seen:
                    duplicates.append(key)
                if hashlib.sha256(body["data"].encode()).hexdigest() != body["sha256"]:
                    corrupt.append(key)
                seen[key] = body["sha256"]
            outputs = [p.communicate(timeout=WAIT)[0] for p in producers]
        finally:
            for p in producers:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
        assert [p.returncode for p in producers] == [0, 0], outputs
        assert not corrupt and not duplicates
        expected = {(name, seq) for name in ("p1", "p2") for seq in range(PER_PRODUCER)}
        assert set(seen) == expected, f"missing: {sorted(expected - set(seen))[:10]}"
        assert queue.qsize() == 0
        queue.close()


def test_a_row_that_is_not_a_message_is_dropped_with_a_warning_and_the_consumer_goes_on(tmp_path, caplog):
    path = tmp_path / "broker.sqlite3"
    with Connection(broker_url(path), transport=TRANSPORT) as conn:
        queue = conn.SimpleQueue(QUEUE)
        queue.put({"n": 1})
        garbage = [
            insert_raw(path, QUEUE, '{"body": "eyJ'),  # half a message, as the filesystem transport showed it
            insert_raw(path, QUEUE, "[1, 2, 3]"),
            insert_raw(path, QUEUE, json.dumps({"body": "e30=", "properties": {}})),
            insert_raw(path, QUEUE, json.dumps({"body": "a", "properties": {"delivery_tag": "x",
                                                                             "body_encoding": "base64"}})),
        ]
        queue.put({"n": 2})
        with caplog.at_level(logging.WARNING, logger="backendai.broker"):
            received = []
            for _ in range(2):
                message = queue.get(block=True, timeout=WAIT)
                received.append(message.payload)
                message.ack()
        assert received == [{"n": 1}, {"n": 2}]
        assert queue.qsize() == 0
        queue.close()
    dropped = [r.getMessage() for r in caplog.records if r.name == "backendai.broker" and r.levelno == logging.WARNING]
    assert len(dropped) == len(garbage)
    for row_id, line in zip(garbage, dropped):
        assert f"dropped message {row_id} " in line
    assert "not JSON" in dropped[0] and "not an object" in dropped[1]
    assert "delivery_tag" in dropped[2] and "body does not decode" in dropped[3]


def test_a_celery_worker_survives_a_garbage_row_and_runs_the_next_task(tmp_path):
    from celery import Celery

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = data_dir / "broker.sqlite3"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith("PYTEST")}
    env.update(BACKEND_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    log_path = tmp_path / "worker.log"
    producer = Celery("broker-test", broker=broker_url(path), set_as_current=False)
    producer.conf.broker_transport = TRANSPORT
    with open(log_path, "wb") as log_file:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "backendai.celery", "worker", "--pool=solo",
                                   "--loglevel=INFO", "--without-gossip", "--without-mingle", "--hostname", "broker-test@%h"],
                                  cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def log_text():
            return log_path.read_text(errors="replace")

        def wait_for(predicate, what):
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                if predicate():
                    return
                assert worker.poll() is None, f"the worker exited ({worker.returncode}) waiting for {what}\n{log_text()}"
                time.sleep(0.2)
            raise AssertionError(f"timed out waiting for {what}\n{log_text()}")

        wait_for(lambda: " ready." in log_text(), "the worker to be ready")
        # celery.accumulate: a built-in task that touches no database
        producer.send_task("celery.accumulate", args=("before",))  # the worker's queue row exists from here on
        wait_for(lambda: "('before',)" in log_text(), "the first task")
        row_id = insert_raw(path, "celery", '{"body": "eyJpZCI6ICIxMjM')
        producer.send_task("celery.accumulate", args=("after",))
        wait_for(lambda: "('after',)" in log_text(), "the task after the garbage row")
        assert f"dropped message {row_id} from queue 'celery'" in log_text()
        assert worker.poll() is None
    finally:
        producer.close()
        stop_process(worker)


def test_the_embedded_mode_uses_this_transport_without_remote_control(tmp_path):
    """The settings of a process without REDIS_URL (whatever mode this test run uses)."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("PYTEST")}
    env.update(BACKEND_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="backendai.settings", PYTHONPATH=str(ROOT))
    code = ("import json; from django.conf import settings as s; print(json.dumps([s.CELERY_BROKER_URL, "
            "s.CELERY_BROKER_TRANSPORT, s.CELERY_WORKER_ENABLE_REMOTE_CONTROL, s.CELERY_BEAT_SCHEDULER]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [
        f"sqlite:///{tmp_path / 'broker.sqlite3'}", TRANSPORT, False, "backendai.beat:ResilientDatabaseScheduler"]
