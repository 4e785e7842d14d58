"""Per-worker services for ``pytest -n N`` (pytest-xdist): loaded with ``-p xdist_env`` before
Django's settings are read, so each worker process gets a Redis database and a data directory of
its own (the next Redis database numbers after the run's, ``<BACKEND_DATA_DIR>-gwN``).  The
database needs nothing here: pytest-django already gives each worker ``test_<name>_gwN``.

Without its own Redis database a worker would empty the other's rate-limit windows and cache,
and the Celery workers of two live stacks would take each other's tasks from one broker queue."""
from __future__ import annotations

import os
import re


def _apply(environ=os.environ) -> None:
    worker = environ.get("PYTEST_XDIST_WORKER", "")
    match = re.fullmatch(r"gw(\d+)", worker)
    if not match:
        return
    index = int(match.group(1))
    url = environ.get("REDIS_URL", "")
    found = re.fullmatch(r"(redis://[^/]+)/(\d+)", url)
    if found and index:
        number = int(found.group(2)) + index
        if number > 15:  # Redis has databases 0-15 unless configured otherwise: count down instead
            number = int(found.group(2)) - index
        environ["REDIS_URL"] = f"{found.group(1)}/{number}"
    data_dir = environ.get("BACKEND_DATA_DIR")
    if data_dir:
        environ["BACKEND_DATA_DIR"] = f"{data_dir.rstrip('/')}-{worker}"


_apply()
