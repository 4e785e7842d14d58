"""The benchmarks of earlier issues run in CI in their ``--short`` mode (seconds) so they cannot rot:
each must finish with status 0 and print its table.  No timing is asserted: the figures are in the
benchmarks' READMEs and docs/performance.md.  (The issue-18 benchmarks have their own tests:
``test_bench_short.py`` beside the code each one measures.)"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.db import connection

from helpers import require

ROOT = Path(__file__).resolve().parents[2]


def run_bench(name: str, *args: str, timeout: int = 600) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / name / "run.py"), "--short", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def server() -> str:
    require(connection.vendor == "postgresql", "PostgreSQL")
    url = urlparse(os.environ["DATABASE_URL"])
    return f"{url.scheme}://{url.netloc}"


def test_the_observability_benchmark_runs_in_short_mode():
    out = run_bench("observability", "--pg", server(), "--db", f"bai_bench_short_obs_{os.getpid()}")
    assert "observability on the hot path" in out and "/metrics: backendai.metrics.exposition() with 51 sessions" in out, out


def test_the_sessions_page_benchmark_runs_in_short_mode():
    out = run_bench("ui_sessions", "--pg", server(), "--db", f"bai_bench_short_ui_{os.getpid()}")
    assert "queries per request the same for 5 and 50 sessions: yes" in out, out


@pytest.mark.e2e
def test_the_serving_benchmark_runs_in_short_mode():
    out = run_bench("serving")
    assert "service create -> first 200" in out and "scale 1 -> 2, all answering" in out, out
