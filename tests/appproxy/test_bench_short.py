"""``bench/appproxy/run.py --short`` (seconds) runs in CI so the benchmark cannot rot: every
target answers, both modes (quiet, busy), the CPU time per request, the scale phase (10 circuits
in short mode) and the summary of issue 18's ratios are printed.
No timing is asserted; the figures themselves are in docs/performance.md."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_app_proxy_benchmark_runs_in_short_mode():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "appproxy" / "run.py"), "--short", "--processes", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "worker event loop: uvloop" in out
    for mode in ("quiet", "busy"):
        assert f"[{mode}] HTTP" in out and f"[{mode}] Websocket" in out
    rows = re.findall(r"^(appproxy worker(?: x2)?) +(\d+) +[\d.]+ +[\d.]+ +\S+ +\S+ +\S+ +([\d.]+) +\S+ +(.+)$", out,
                      re.M)
    assert len(rows) == 4, out  # the worker and the worker with 2 processes, in both modes
    assert all(int(rps) > 0 and float(cpu) > 0 and errors.strip() == "0" for _, rps, cpu, errors in rows), out
    scale = re.findall(r"^appproxy worker, (\d+) circuits? +(\d+) .* (\S+)$", out, re.M)
    assert [count for count, _, _ in scale] == ["1", "10"], out
    assert all(int(rps) > 0 and errors == "0" for _, rps, errors in scale), out
    summary = out.split("Summary", 1)[1]
    assert re.search(r"^quiet ", summary, re.M) and re.search(r"^busy ", summary, re.M)
