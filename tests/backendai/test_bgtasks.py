"""Background tasks (``backendai.bgtasks``) and their stream
``GET /events/background-task``: a task runs once, reports progress, ends done,
failed or cancelled; the stream holds only comments and whole events
(``bgtask_updated`` then the outcome then ``server_close``, JSON data each, as the
official clients read them); only the task's starter and superadmins follow it."""
from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from backendai import bgtasks
from backendai.models import BackgroundTask, BackgroundTaskStatus
from helpers import slug

pytestmark = pytest.mark.django_db


def blocks(response) -> list[list[str]]:
    from asgiref.sync import async_to_sync

    async def read(chunks):
        return [chunk async for chunk in chunks]

    raw = async_to_sync(read)(response.streaming_content)
    text = b"".join(c if isinstance(c, bytes) else c.encode() for c in raw).decode()
    return [block.split("\n") for block in text.split("\n\n") if block]


def events(response) -> list[tuple[str, dict]]:
    """The stream's events as the official client's SSE reader sees them, checking each block."""
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    stream = blocks(response)
    assert stream[0] == [": ok"]
    found = []
    for block in stream:
        fields = [line for line in block if not line.startswith(":")]
        if not fields:
            continue
        assert fields[0].startswith("event: ") and any(f.startswith("data: ") for f in fields), block
        assert all(line.split(":", 1)[0] in ("event", "data", "retry") for line in fields), block
        assert "retry: 5" in fields
        found.append((fields[0][7:], json.loads("\n".join(f[6:] for f in fields if f.startswith("data: ")))))
    assert found[-1] == ("server_close", {})
    return found


def follow(api, task_id, key="task_id"):
    return api.get(f"/events/background-task?{key}={task_id}")


def test_a_task_runs_once_and_reports_each_step(owner):
    task_id = bgtasks.start("count", "bgtask_samples.count_to", 3, owner=owner.pk)
    assert BackgroundTask.objects.get(pk=task_id).status == BackgroundTaskStatus.PENDING
    assert bgtasks.run(task_id) == BackgroundTaskStatus.DONE
    task = BackgroundTask.objects.get(pk=task_id)
    assert (task.status, task.message, task.current_progress, task.total_progress) == ("done", "counted to 3", 3, 3)
    assert task.started_at and task.finished_at and task.revision == 6  # claim, 4 reports, the outcome
    assert bgtasks.run(task_id) is None  # a second delivery of the message runs nothing


def test_the_stream_of_a_finished_task_replays_its_last_report_and_outcome(owner, signed):
    task_id = bgtasks.start("count", "bgtask_samples.count_to", 2, owner=owner.pk)
    bgtasks.run(task_id)
    found = events(follow(signed(owner), task_id))
    assert [name for name, _ in found] == ["bgtask_updated", "bgtask_done", "server_close"]
    assert found[0][1] == {"task_id": task_id, "message": "counted to 2", "current_progress": 2.0,
                           "total_progress": 2.0}
    assert found[1][1] == {"task_id": task_id, "message": "counted to 2"}


@pytest.mark.parametrize("function, message", [
    ("fail_cleanly", "the disk is full"),
    ("refuse", "no such registry"),
    ("crash", bgtasks.INTERNAL_ERROR),
])
def test_a_failing_task_ends_failed_with_its_reason_and_never_an_internal_detail(owner, signed, function, message):
    task_id = bgtasks.start("fails", f"bgtask_samples.{function}", owner=owner.pk)
    assert bgtasks.run(task_id) == BackgroundTaskStatus.FAILED
    response = follow(signed(owner), task_id, key="taskId")
    found = events(response)
    assert found[-2] == ("bgtask_failed", {"task_id": task_id, "message": message})
    assert "/srv/secret" not in json.dumps(found)


def test_problems_a_task_lists_travel_in_bgtask_done(owner, signed):
    task_id = bgtasks.start("issues", "bgtask_samples.with_problems", owner=owner.pk)
    bgtasks.run(task_id)
    found = events(follow(signed(owner), task_id))
    assert found[-2] == ("bgtask_done", {"task_id": task_id, "message": "done, with issues",
                                         "errors": ["repo/a:1: manifest unknown"]})


def test_a_cancelled_task_stops_at_its_next_report(owner, signed):
    running = bgtasks.start("cancel", "bgtask_samples.cancel_self", owner=owner.pk)
    assert bgtasks.run(running) == BackgroundTaskStatus.CANCELLED
    assert BackgroundTask.objects.get(pk=running).message == "Cancelled."
    pending = bgtasks.start("cancel", "bgtask_samples.count_to", 2, owner=owner.pk)
    assert bgtasks.cancel(pending) is True and bgtasks.run(pending) is None
    assert bgtasks.cancel(pending) is False
    for task_id in (running, pending):
        names = [name for name, _ in events(follow(signed(owner), task_id))]
        assert names[-2:] == ["bgtask_cancelled", "server_close"]


@pytest.mark.parametrize("path, args", [
    ("bgtask_samples.unmarked", ()),
    ("bgtask_samples.nothing_here", ()),
    ("no_such_module.anything", ()),
    ("os.system", ("true",)),
    ("bgtask_samples.count_to", (object(),)),
])
def test_start_refuses_unmarked_functions_and_non_json_arguments(owner, path, args):
    with pytest.raises((ValueError, TypeError)):
        bgtasks.start("bad", path, *args, owner=owner.pk)
    assert not BackgroundTask.objects.exists()


def test_a_task_is_queued_only_when_its_transaction_commits(owner, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        bgtasks.start("count", "bgtask_samples.count_to", 1, owner=owner.pk)
    assert len(callbacks) == 1


def test_only_the_starter_and_superadmins_follow_a_task(owner, member, outsider, foreign_admin, domain_admin,
                                                        superadmin, signed):
    task_id = bgtasks.start("count", "bgtask_samples.count_to", 1, owner=owner.pk)
    bgtasks.run(task_id)
    for user in (owner, superadmin):
        assert [name for name, _ in events(follow(signed(user), task_id))][-2] == "bgtask_done"
    for user in (member, outsider, foreign_admin, domain_admin):
        refused = follow(signed(user), task_id)
        assert refused.status_code == 404 and slug(refused) == "object-not-found"
        assert "counted" not in refused.content.decode()


@pytest.mark.parametrize("query, status", [
    ("", 400), ("?task_id=", 400), ("?task_id=not-a-uuid", 400), ("?task_id=3f1d2c4b-5a69-4e7f-8d0c-1b2a3e4f5061", 404),
])
def test_a_missing_or_bad_task_id_is_a_clean_error(owner, signed, query, status):
    response = signed(owner).get(f"/events/background-task{query}")
    assert response.status_code == status and response["Content-Type"] == "application/problem+json"


def test_an_unsigned_request_is_refused(client, owner):
    task_id = bgtasks.start("count", "bgtask_samples.count_to", 1, owner=owner.pk)
    response = client.get(f"/events/background-task?task_id={task_id}")
    assert response.status_code == 401


@pytest.mark.django_db(transaction=True)
def test_the_stream_follows_a_running_task_to_its_end(owner, signed):
    """A worker thread runs the task while the stream is read: the reports arrive in order."""
    task_id = bgtasks.start("count", "bgtask_samples.count_to", 4, 0.3, owner=owner.pk)

    def worker():
        from django.db import connection

        time.sleep(0.5)
        try:
            bgtasks.run(task_id)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        found = events(follow(signed(owner), task_id))
    finally:
        thread.join(30)
    updates = [data["current_progress"] for name, data in found if name == "bgtask_updated"]
    assert len(updates) >= 2 and updates == sorted(updates) and updates[-1] == 4.0
    assert found[-2] == ("bgtask_done", {"task_id": task_id, "message": "counted to 4"})


def test_the_reconciler_fails_a_running_task_whose_worker_went_silent(owner, signed):
    task_id = bgtasks.start("count", "bgtask_samples.count_to", 3, owner=owner.pk)
    BackgroundTask.objects.filter(pk=task_id).update(status=BackgroundTaskStatus.RUNNING)  # a worker claimed it, then died
    later = timezone.now() + bgtasks.STALLED_AFTER + timedelta(seconds=1)
    assert bgtasks.reconcile(later)["stalled"] == 1
    task = BackgroundTask.objects.get(pk=task_id)
    assert (task.status, task.message) == (BackgroundTaskStatus.FAILED, bgtasks.STALLED_MESSAGE)
    assert [name for name, _ in events(follow(signed(owner), task_id))][-2:] == ["bgtask_failed", "server_close"]


def test_the_reconciler_leaves_a_task_that_reports_and_fails_one_nobody_claimed(owner):
    reporting = bgtasks.start("count", "bgtask_samples.count_to", 3, owner=owner.pk)
    BackgroundTask.objects.filter(pk=reporting).update(status=BackgroundTaskStatus.RUNNING)
    unclaimed = bgtasks.start("count", "bgtask_samples.count_to", 3, owner=owner.pk)
    bgtasks.Progress(reporting).update(1, total=3)
    soon = timezone.now() + bgtasks.UNCLAIMED_AFTER + timedelta(seconds=1)
    assert bgtasks.reconcile(soon) == {"stalled": 0, "unclaimed": 1, "purged": 0}
    assert BackgroundTask.objects.get(pk=reporting).status == BackgroundTaskStatus.RUNNING
    assert BackgroundTask.objects.get(pk=unclaimed).message == bgtasks.UNCLAIMED_MESSAGE


def test_the_reconciler_deletes_finished_tasks_after_a_week(owner):
    task_id = bgtasks.start("count", "bgtask_samples.count_to", 1, owner=owner.pk)
    bgtasks.run(task_id)
    assert bgtasks.reconcile(timezone.now() + timedelta(days=8))["purged"] == 1
    assert not BackgroundTask.objects.filter(pk=task_id).exists()
