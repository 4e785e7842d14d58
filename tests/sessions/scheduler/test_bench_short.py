"""``bench/scheduler/run.py --short`` (seconds) runs in CI so the benchmark cannot rot: every
contender runs on the same data, the pass's stages and statements are printed, the decisions of
the set-based pass and of the per-row variant agree and no agent is over-allocated.  No timing is
asserted; the figures themselves are in docs/performance.md."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from django.db import connection

from helpers import require

ROOT = Path(__file__).resolve().parents[3]


def test_the_scheduler_benchmark_runs_in_short_mode():
    require(connection.vendor == "postgresql", "PostgreSQL")
    url = urlparse(os.environ["DATABASE_URL"])
    server = f"{url.scheme}://{url.netloc}"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scheduler" / "run.py"), "--short", "--server", server,
         "--db", f"bai_bench_short_{os.getpid()}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^set-based pass \(ours\)\s+1000\s", out, re.M), out
    for stage in ("snapshot", "decide", "write", "occupancy"):
        assert re.search(rf"^  stage: {stage}\s+[\d.]+\s+same run$", out, re.M), out
    for contender in ("write only, previous: one jsonb_to_recordset UPDATE",
                      "write only, now: COPY + guarded UPDATE", "in-memory decisions + per-row ORM writes",
                      "naive per-session ORM loop, first 50"):
        assert contender in out, out
    statements = int(re.search(r"^set-based pass \(ours\)\s+\d+\s+[\d.]+\s+\d+\s+(\d+)", out, re.M).group(1))
    assert statements == 14, out  # constant: see test_postgres.py
    assert re.search(r"same decisions for the per-row variant: True .*over-allocated agents after the set-based "
                     r"pass: 0$", out, re.M), out
