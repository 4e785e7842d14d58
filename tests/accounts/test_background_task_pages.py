"""The web UI's background task pages (``/ui/tasks/``, ``/ui/tasks/<id>/``) and their live
fragments: who sees which task, how progress shows, when htmx stops polling, the statement
count of the list; and the ``backendai_bgtask_*`` metrics on ``/metrics``."""
from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from backendai import bgtasks
from backendai.models import BackgroundTask, BackgroundTaskStatus
from permission_matrix import ROLES, World, assert_no_foreign_secret

pytestmark = pytest.mark.django_db

LIST = reverse("ui:tasks")
ROWS = reverse("ui:task-rows")
HTMX = {"HTTP_HX_REQUEST": "true"}


def make_task(owner, name="rescan_images", status=BackgroundTaskStatus.PENDING, current=0, total=0, message="",
              errors=(), age=0) -> BackgroundTask:
    """A task row as the plumbing leaves it in ``status`` (the worker's steps are tested in
    tests/backendai/test_bgtasks.py)."""
    now = timezone.now() - timedelta(seconds=age)
    started = now if status != BackgroundTaskStatus.PENDING else None
    finished = now if status in bgtasks.FINISHED else None
    task = BackgroundTask.objects.create(name=name, func_path="bgtask_samples.count_to", owner_id=str(owner.pk),
                                         status=status, current_progress=current, total_progress=total,
                                         message=message, errors=list(errors), started_at=started,
                                         finished_at=finished)
    BackgroundTask.objects.filter(pk=task.pk).update(created_at=now)
    return task


def detail_url(task) -> str:
    return reverse("ui:task", kwargs={"task_id": task.pk})


def status_url(task) -> str:
    return reverse("ui:task-status", kwargs={"task_id": task.pk})


def row_of(page: str, task) -> str:
    match = re.search(rf'<tr data-task="{task.pk}".*?</tr>', page, re.S)
    assert match, f"no row for task {task.pk}"
    return match.group(0)


# --- who sees what --------------------------------------------------------------------------------

@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin):
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users, objects={"task": make_task(owner, name="owners-secret-rescan",
                                                         status=BackgroundTaskStatus.RUNNING, current=1, total=4)})


SEES_OWNERS_TASK = ("owner", "superadmin")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url", [LIST, ROWS], ids=["page", "rows"])
def test_the_list_and_its_rows_show_a_task_only_to_its_starter_and_superadmins(client, world, role, url):
    viewer = world.users[role]
    client.force_login(viewer)
    response = client.get(url)
    assert response.status_code == 200
    body = response.content.decode()
    task = world.objects["task"]
    assert (str(task.pk) in body) == (role in SEES_OWNERS_TASK), f"{role}: the owner's task is wrongly (not) shown"
    assert ("owners-secret-rescan" in body) == (role in SEES_OWNERS_TASK)
    assert_no_foreign_secret(response, viewer, world, f"{url} as {role}")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("which", ["page", "status"])
def test_a_task_page_and_its_fragment_are_not_found_for_anyone_but_its_starter_and_superadmins(client, world,
                                                                                             role, which):
    viewer = world.users[role]
    task = world.objects["task"]
    client.force_login(viewer)
    response = client.get(detail_url(task) if which == "page" else status_url(task))
    assert response.status_code == (200 if role in SEES_OWNERS_TASK else 404)
    assert (f'data-task="{task.pk}"' in response.content.decode()) == (role in SEES_OWNERS_TASK)
    assert "owners-secret-rescan" not in response.content.decode() or role in SEES_OWNERS_TASK
    assert_no_foreign_secret(response, viewer, world, f"task {which} as {role}")


def test_a_domain_admin_sees_the_tasks_of_their_domains_users_but_not_another_domains(client, owner, outsider,
                                                                                       domain_admin):
    mine = make_task(owner, name="in-my-domain")
    theirs = make_task(outsider, name="in-another-domain")
    client.force_login(domain_admin)
    page = client.get(LIST).content.decode()
    assert str(mine.pk) in page and "owner@example.com" in page  # admins see who started it
    assert str(theirs.pk) not in page and "in-another-domain" not in page
    assert client.get(detail_url(mine)).status_code == 200
    assert client.get(detail_url(theirs)).status_code == 404


def test_a_superadmin_sees_every_task_even_one_no_user_started(client, owner, outsider, superadmin):
    tasks = [make_task(owner), make_task(outsider)]
    system = BackgroundTask.objects.create(name="maintenance", func_path="bgtask_samples.count_to")
    client.force_login(superadmin)
    page = client.get(LIST).content.decode()
    assert all(str(t.pk) in page for t in tasks) and str(system.pk) in page


def test_a_user_sees_only_their_own_tasks_newest_first(client, owner, member):
    old = make_task(owner, name="older", age=60)
    new = make_task(owner, name="newer", age=1)
    other = make_task(member, name="members-task")
    client.force_login(owner)
    page = client.get(LIST).content.decode()
    assert page.index(str(new.pk)) < page.index(str(old.pk))
    assert str(other.pk) not in page and "members-task" not in page
    assert "Started by" not in page  # a user's own tasks need no owner column


def test_the_pages_need_a_login_and_an_unknown_or_malformed_id_is_not_found(client, owner):
    task = make_task(owner)
    for url in (LIST, ROWS, detail_url(task), status_url(task)):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/ui/login/")
    client.force_login(owner)
    assert client.get(reverse("ui:task", kwargs={"task_id": uuid.uuid4()})).status_code == 404
    assert client.get(reverse("ui:task", kwargs={"task_id": "not-a-uuid"})).status_code == 404
    assert client.get(reverse("ui:task-status", kwargs={"task_id": "x" * 300})).status_code == 404


def test_the_navigation_links_the_task_list(client, owner):
    client.force_login(owner)
    page = client.get(reverse("ui:dashboard")).content.decode()
    assert f'<a href="{LIST}"' in page
    assert re.search(rf'<a href="{LIST}" class="active">Tasks</a>', client.get(LIST).content.decode())


# --- progress ---------------------------------------------------------------------------------------

def test_each_state_shows_its_progress_message_and_problems(client, owner):
    pending = make_task(owner, name="waiting")
    running = make_task(owner, name="working", status=BackgroundTaskStatus.RUNNING, current=2, total=5,
                        message="reg/repo-2")
    unknown = make_task(owner, name="counting", status=BackgroundTaskStatus.RUNNING, message="listing")
    done = make_task(owner, name="finished", status=BackgroundTaskStatus.DONE, current=5, total=5,
                     message="5 image(s) from 1 registr(ies)", errors=["repo/a:1: manifest unknown"])
    failed = make_task(owner, name="broken", status=BackgroundTaskStatus.FAILED, current=1, total=3,
                       message="the disk is full")
    cancelled = make_task(owner, name="stopped", status=BackgroundTaskStatus.CANCELLED, message="Cancelled.")
    client.force_login(owner)
    page = client.get(LIST).content.decode()

    row = row_of(page, pending)
    assert 'data-status="pending">Pending<' in row and 'aria-label="Waiting for a worker"' in row
    assert "value=" not in row  # no value: an indeterminate bar

    row = row_of(page, running)
    assert 'data-status="running">Running<' in row
    assert '<progress class="task-progress" max="5" value="2" aria-label="40% done">' in row
    assert "2 / 5 (40%)" in row and "reg/repo-2" in row

    row = row_of(page, unknown)
    assert '<progress class="task-progress" aria-label="Working"></progress>' in row  # total 0: indeterminate

    row = row_of(page, done)
    assert 'data-status="done">Done<' in row and 'value="5"' in row and "(100%)" in row
    assert "5 image(s) from 1 registr(ies)" in row and "1 problem<" in row
    assert "<li>repo/a:1: manifest unknown</li>" in row
    assert done.finished_at.strftime("%Y-%m-%d") in row

    row = row_of(page, failed)
    assert 'data-status="failed">Failed<' in row and "the disk is full" in row and "(33%)" in row

    row = row_of(page, cancelled)
    assert 'data-status="cancelled">Cancelled<' in row and "Cancelled." in row and "<progress" not in row


def test_a_task_page_shows_its_progress_and_problems(client, owner):
    task = make_task(owner, name="rescan_images", status=BackgroundTaskStatus.DONE, current=3, total=3,
                     message="3 image(s)", errors=["a: denied", "b: <script>"])
    client.force_login(owner)
    page = client.get(detail_url(task)).content.decode()
    assert 'data-status="done"' in page and "3 image(s)" in page and 'max="3" value="3"' in page
    assert "<li>a: denied</li>" in page and "<li>b: &lt;script&gt;</li>" in page  # escaped


# --- live updates -------------------------------------------------------------------------------

def test_the_list_polls_its_rows_while_a_task_is_unfinished_and_stops_when_all_are_over(client, owner):
    task = make_task(owner, status=BackgroundTaskStatus.RUNNING, current=1, total=2)
    client.force_login(owner)
    page = client.get(LIST).content.decode()
    assert re.search(rf'<tbody id="task-rows" data-live-url="{ROWS}" hx-get="{ROWS}" hx-trigger="every 2s"', page)
    assert "/static/vendor/htmx/htmx.min.js" in page and "/static/sessions/live.js" in page
    assert "<script>" not in page  # the CSP allows no inline script
    rows = client.get(ROWS, **HTMX)
    assert rows.status_code == 200 and rows["X-Live-Fragment"] == "1" and "<html" not in rows.content.decode()
    BackgroundTask.objects.filter(pk=task.pk).update(status=BackgroundTaskStatus.DONE, finished_at=timezone.now())
    final = client.get(ROWS, **HTMX)
    assert final.status_code == 286 and final["X-Live-Fragment"] == "1"  # htmx swaps it in, then stops
    assert 'data-status="done"' in final.content.decode()
    assert client.get(ROWS).status_code == 200  # to anything but htmx, a plain 200
    assert "hx-get" not in client.get(LIST).content.decode()  # nothing left to watch: no polling at all


def test_a_task_page_polls_its_status_until_the_task_is_over(client, owner):
    task = make_task(owner, status=BackgroundTaskStatus.PENDING)
    client.force_login(owner)
    page = client.get(detail_url(task)).content.decode()
    assert f'hx-get="{status_url(task)}" hx-trigger="every 2s"' in page
    live = client.get(status_url(task), **HTMX)
    assert live.status_code == 200 and live["X-Live-Fragment"] == "1" and "data-live-final" not in live.content.decode()
    bgtasks.cancel(str(task.pk))
    final = client.get(status_url(task), **HTMX)
    assert final.status_code == 286 and 'data-live-final="1"' in final.content.decode()
    assert 'data-status="cancelled"' in final.content.decode()
    assert "hx-get" not in client.get(detail_url(task)).content.decode()


def test_a_task_run_by_the_worker_shows_done_on_its_page(client, owner):
    task_id = bgtasks.start("count", "bgtask_samples.count_to", 3, owner=owner.pk)
    client.force_login(owner)
    assert 'data-status="pending"' in client.get(status_url(BackgroundTask(pk=task_id)), **HTMX).content.decode()
    bgtasks.run(task_id)
    final = client.get(status_url(BackgroundTask(pk=task_id)), **HTMX)
    assert final.status_code == 286 and "counted to 3" in final.content.decode() and 'max="3" value="3"' in \
        final.content.decode()


# --- statements ---------------------------------------------------------------------------------

# The login session and the user, the page of tasks; a domain admin's page first reads the ids of
# their domain's users, an admin's page then the emails of the tasks' starters (one statement).
TASKS_PAGE = {"owner": 3, "domain_admin": 5, "superadmin": 4}


@pytest.mark.parametrize("role", sorted(TASKS_PAGE))
def test_the_list_runs_as_many_statements_for_ten_tasks_as_for_one(client, owner, domain_admin, superadmin, make_user,
                                                                   role):
    viewer = {"owner": owner, "domain_admin": domain_admin, "superadmin": superadmin}[role]
    client.force_login(viewer)
    counts = []
    for n in (1, 10):
        BackgroundTask.objects.all().delete()
        for i in range(n):
            make_task(owner if i % 2 == 0 else make_user(), status=BackgroundTaskStatus.RUNNING, current=i, total=10)
        with CaptureQueriesContext(connection) as captured:
            response = client.get(LIST)
        assert response.status_code == 200
        counts.append(len(captured))
    statements = "\n".join(q["sql"] for q in captured.captured_queries)
    assert counts == [TASKS_PAGE[role]] * 2, f"{role}: {counts} statements, pinned {TASKS_PAGE[role]}:\n{statements}"


# --- metrics ------------------------------------------------------------------------------------

def sample(metric: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(metric, labels) or 0


def test_a_finished_task_is_counted_timed_and_gauged_on_metrics(client, owner, settings):
    settings.METRICS_PUBLIC = True  # the public port serves /metrics only when configured
    labels = {"name": "metrics-count"}
    before = (sample("backendai_bgtask_done_count_total", status="done", **labels),
              sample("backendai_bgtask_processing_time_sec_count", **labels),
              sample("backendai_bgtask_done_count_total", status="failed", name="metrics-fail"))
    done = bgtasks.start("metrics-count", "bgtask_samples.count_to", 2, owner=owner.pk)
    bgtasks.start("metrics-count", "bgtask_samples.count_to", 2, owner=owner.pk)  # left pending
    failed = bgtasks.start("metrics-fail", "bgtask_samples.fail_cleanly", owner=owner.pk)
    assert bgtasks.run(done) == "done" and bgtasks.run(failed) == "failed"
    after = (sample("backendai_bgtask_done_count_total", status="done", **labels),
             sample("backendai_bgtask_processing_time_sec_count", **labels),
             sample("backendai_bgtask_done_count_total", status="failed", name="metrics-fail"))
    assert [a - b for a, b in zip(after, before)] == [1, 1, 1]
    body = client.get("/metrics").content.decode()
    assert 'backendai_bgtask_status_count{name="metrics-count",status="done"} 1.0' in body
    assert 'backendai_bgtask_status_count{name="metrics-count",status="pending"} 1.0' in body
    assert 'backendai_bgtask_status_count{name="metrics-fail",status="failed"} 1.0' in body
    assert 'backendai_bgtask_done_count_total{name="metrics-count",status="done"}' in body
    assert 'backendai_bgtask_processing_time_sec_bucket{le="0.1",name="metrics-count"}' in body
    assert 'backendai_bgtask_count_total{name="metrics-count"}' in body  # started by a worker


def test_cancelled_and_given_up_tasks_are_counted_once(owner):
    labels = {"name": "metrics-stuck"}
    before = (sample("backendai_bgtask_done_count_total", status="cancelled", **labels),
              sample("backendai_bgtask_done_count_total", status="failed", **labels))
    cancelled = bgtasks.start("metrics-stuck", "bgtask_samples.count_to", 1, owner=owner.pk)
    assert bgtasks.cancel(cancelled) and not bgtasks.cancel(cancelled)  # the second one changes nothing
    bgtasks.start("metrics-stuck", "bgtask_samples.count_to", 1, owner=owner.pk)
    later = timezone.now() + timedelta(hours=1)
    assert bgtasks.reconcile(later)["unclaimed"] == 1 and bgtasks.reconcile(later)["unclaimed"] == 0
    after = (sample("backendai_bgtask_done_count_total", status="cancelled", **labels),
             sample("backendai_bgtask_done_count_total", status="failed", **labels))
    assert [a - b for a, b in zip(after, before)] == [1, 1]


def test_the_gauge_is_one_statement_however_many_tasks(client, owner):
    from backendai.metrics import DatabaseCollector

    for i in range(5):
        make_task(owner, name=f"gauge-{i % 2}", status=BackgroundTaskStatus.DONE)
    with CaptureQueriesContext(connection) as captured:
        families = {f.name: f for f in DatabaseCollector().collect()}
    assert len(captured) == 6  # sessions, oldest waits, agents, proxy workers, storage proxies, tasks: a GROUP BY each
    samples = {(s.labels["name"], s.labels["status"]): s.value for s in families["backendai_bgtask_status_count"].samples}
    assert samples == {("gauge-0", "done"): 3, ("gauge-1", "done"): 2}
