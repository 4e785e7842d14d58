"""``bench/vfolders/run.py --short`` (seconds) runs in CI so the benchmark cannot rot: every step
runs, its table and the summary of issue 18's ratios are printed and the files stay byte-identical.
No timing is asserted; the figures themselves are in docs/performance.md."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_files_benchmark_runs_in_short_mode(tmp_path):
    command = [sys.executable, str(ROOT / "bench" / "vfolders" / "run.py"), "--short", "--dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-3000:]
    steps = ["plain copy", "upload via the storage proxy", "download via the storage proxy"]
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        steps.append("download via nginx (sendfile)")
    for step in steps:
        assert re.search(rf"^\| {re.escape(step)} \| [\d.]+ \| \d+ \| [\d.]+x \|", out, re.M), out
    assert "byte-identical: yes" in out
    assert re.search(r"^summary: upload [\d.]+x plain copy .* download [\d.]+x plain copy", out, re.M), out
    assert re.search(r"^proxy memory: RSS [\d.]+ MiB at start, peak [\d.]+ MiB", out, re.M), out
    assert not list(tmp_path.iterdir())  # its working directory is gone


def test_the_send_path_benchmark_runs_in_short_mode(tmp_path):
    command = [sys.executable, str(ROOT / "bench" / "vfolders" / "sendpath.py"), "--short", "--dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-3000:]
    servers = ["asyncio loop.sendfile"]
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        servers.append("nginx (sendfile)")
    for cache in ("warm", "cold"):
        for server in servers:
            assert re.search(rf"^\| {cache} \| {re.escape(server)} \| [\d.]+ \| [\d.]+ \| \d+ \|", out, re.M), out
    assert not list(tmp_path.iterdir())  # its working directory is gone
