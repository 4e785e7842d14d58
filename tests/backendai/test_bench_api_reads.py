"""``bench/api_reads/run.py --short`` and ``inprocess.py --short`` (seconds) run in CI so the benchmarks cannot
rot.  The first seeds 1 000
sessions, starts daphne and gunicorn + uvicorn workers (the production recipe) and drives each read
through ``wrk``; every read must answer without errors and the table must be printed.  No timing is
asserted; the figures are in docs/performance.md (*API reads*)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from django.db import connection

from helpers import require

ROOT = Path(__file__).resolve().parents[2]
READS = ("healthz", "session info (REST)", "compute_session_list", "vfolder_list", "sessions page")


def test_it_runs_the_api_reads_benchmark_in_short_mode():
    require(connection.vendor == "postgresql", "PostgreSQL")
    require(bool(os.environ.get("REDIS_URL")), "Redis (REDIS_URL)")
    require(shutil.which("wrk") is not None or os.geteuid() == 0, "wrk (apt-get install wrk)")
    url = urlparse(os.environ["DATABASE_URL"])
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "api_reads" / "run.py"), "--short", "--pg", f"{url.scheme}://{url.netloc}",
         "--db", f"bai_bench_short_api_{os.getpid()}", "--redis", os.environ["REDIS_URL"],
         "--port", str(41100 + os.getpid() % 40 * 2)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "API reads: 1000 sessions, 32 clients, 2 web processes" in out, out
    for read in READS:
        for setup in ("before", "after"):
            # the bench checks each read's answer (200, no GraphQL errors) before its load; under load no
            # request may finish within the short mode's second, so only errors are asserted here
            row = re.search(rf"^{re.escape(read)}\s+{setup}\s+\d+\s+[\d.]+\s+[\d.]+\s+(\d+)\s", out, re.M)
            assert row, f"{read} {setup}:\n{out}"
            assert int(row.group(1)) == 0, f"{read} {setup}: errors:\n{out}"


def test_it_runs_the_in_process_benchmark_in_short_mode_against_a_baseline_tree():
    """``bench/api_reads/inprocess.py --short``: each read answered (the bench stops on anything but a 200),
    CPU time and function calls per request printed for both trees (here the same tree twice)."""
    require(connection.vendor == "postgresql", "PostgreSQL")
    require(bool(os.environ.get("REDIS_URL")), "Redis (REDIS_URL)")
    url = urlparse(os.environ["DATABASE_URL"])
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "api_reads" / "inprocess.py"), "--short", "--baseline-root", str(ROOT),
         "--pg", f"{url.scheme}://{url.netloc}", "--db", f"bai_bench_short_inproc_{os.getpid()}",
         "--redis", os.environ["REDIS_URL"]],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:] + out[-2000:]
    assert "API reads in one process" in out, out
    for read in READS:
        row = re.search(rf"^{re.escape(read)}\s+([\d.]+)\s+([\d.]+)\s+[\d.]+x\s+(\d+)\s+(\d+)\s+[\d.]+x$", out, re.M)
        assert row, f"{read}:\n{out}"
        assert float(row.group(1)) > 0 and int(row.group(3)) > 0 and int(row.group(4)) > 0, out
