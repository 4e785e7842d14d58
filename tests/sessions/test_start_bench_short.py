"""``bench/hints/run.py --short`` (seconds) runs in CI so the session-start benchmark cannot rot: a
stack in the embedded mode, a few sessions on the local backend with the old behaviour and with hints,
and the table.  No timing is asserted; the figures themselves are in docs/performance.md."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from docker_support import find_free_block

ROOT = Path(__file__).resolve().parents[2]


def test_it_runs_the_session_start_benchmark_in_short_mode_and_prints_its_table():
    low = find_free_block(30)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "hints" / "run.py"), "--short",
                           "--ports", f"{low}-{low + 29}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    rows = re.findall(r"^embedded +local +(baseline|hints) +([\d.]+)s +([\d.]+)s +([\d.]+)s +([\d.]+)s", out, re.M)
    assert [variant for variant, *_ in rows] == ["baseline", "hints"], out
    assert all(float(p50) > 0 for _, p50, *_ in rows), out
    assert re.search(r"^target \(hints\): .*: (met|NOT met)$", out, re.M), out
