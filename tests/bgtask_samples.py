"""Background task functions the bgtask tests run (``backendai.bgtasks.start`` takes
their dotted path, ``bgtask_samples.<name>``: ``tests/`` is on the test path)."""
from __future__ import annotations

import time

from backendai import bgtasks
from backendai.api import errors


@bgtasks.background
def count_to(progress: bgtasks.Progress, n: int, pause: float = 0.0) -> str:
    progress.update(0, total=n, message="starting")
    for i in range(1, n + 1):
        time.sleep(pause)
        progress.update(i, message=f"step {i}")
    return f"counted to {n}"


@bgtasks.background
def fail_cleanly(progress: bgtasks.Progress) -> None:
    progress.update(1, total=3, message="one third")
    raise bgtasks.TaskFailed("the disk is full")


@bgtasks.background
def refuse(progress: bgtasks.Progress) -> None:
    raise errors.InvalidAPIParameters("no such registry")


@bgtasks.background
def crash(progress: bgtasks.Progress) -> None:
    raise RuntimeError("internal detail: /srv/secret/path")


@bgtasks.background
def with_problems(progress: bgtasks.Progress) -> bgtasks.Outcome:
    return bgtasks.Outcome("done, with issues", errors=["repo/a:1: manifest unknown"])


@bgtasks.background
def cancel_self(progress: bgtasks.Progress) -> str:
    bgtasks.cancel(progress.task_id)
    progress.update(1, total=2, message="never recorded")
    return "never reached"


def unmarked(progress: bgtasks.Progress) -> str:
    return "not a background task"
