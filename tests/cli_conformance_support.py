"""Shared pieces of the official CLI conformance tests (tests/e2e/test_cli_conformance_23.py, _24.py,
_26.py and the README/gaps checks in tests/e2e/test_cli_conformance.py): ``scripts/conformance`` loaded
as a module, where each client version's ``backend.ai`` is, and one version's whole run against a live
stack checked against ``tests/e2e/cli_conformance_gaps.txt``.

One test file per version so that ``--dist loadfile`` hands the three runs (minutes each) to different
workers, each with a live stack of its own, instead of one worker running all three at the end."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import STRICT

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "conformance"
AGENT_ID = "conformance-agent"
RUN_TIMEOUT = 1800
ALWAYS = "23.9.10"  # the client every machine that runs the suite has (scripts/test installs it on 3.11)
# version -> (variable scripts/test exports, virtualenv under the checkout, the Python it needs)
CLIENTS = {
    "23.9.10": ("BACKENDAI_CLIENT_BIN", ".venv-client", "3.11"),
    "24.9.14": ("BACKENDAI_CLIENT24_BIN", ".venv-client-24", "3.12"),
    "26.9.6": ("BACKENDAI_CLIENT26_BIN", ".venv-client-26", "3.13"),
}


def _load_script():
    """The script itself as a module (it has no .py name): its gaps file reader and README
    renderer are the ones the tests check against, never a copy."""
    name = "bai_scripts_conformance"
    if name not in sys.modules:
        loader = importlib.machinery.SourceFileLoader(name, str(SCRIPT))
        spec = importlib.util.spec_from_loader(name, loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        loader.exec_module(module)
    return sys.modules[name]


conformance = _load_script()


def client_binary(version: str, require) -> Path | None:
    """The client's ``backend.ai``, or None (locally) when scripts/test found no Python for this
    version (it exports an empty variable then).  Under CI=true a missing Python or client fails."""
    variable, venv, python_version = CLIENTS[version]
    configured = os.environ.get(variable)
    if configured == "" and not STRICT:
        return None
    require(configured != "", f"python{python_version} for the official client {version} (scripts/test installs it)")
    binary = Path(configured or ROOT / venv / "bin" / "backend.ai")
    require(binary.is_file(), f"the official client {version} at {binary} (scripts/test installs it)")
    return binary


def client_or_skip(version: str, require) -> Path:
    """``client_binary`` for one version's test: 23.9.10 always runs; a newer client whose Python
    this machine lacks skips its test locally (under CI=true ``client_binary`` fails instead)."""
    binary = client_binary(version, require)
    if binary is None:
        assert version != ALWAYS, f"the official client {ALWAYS} always runs"
        python = CLIENTS[version][2]
        pytest.skip(f"no python{python} here for the official client {version} (scripts/test leaves it out)")
    return binary


def gap_report(version: str, results: dict, gaps: set[str]) -> list[str]:
    """What disagrees with the gaps file: new failures, gaps that work now, gaps the run never saw."""
    problems = []
    for command, result in results.items():
        if result["status"] == "FAIL" and command not in gaps:
            problems.append(f"{version} {command} FAILS and is not a listed gap: {result['reason']}")
        elif result["status"] == "ok" and command in gaps:
            problems.append(f"{version} {command} WORKS now: remove it from {conformance.GAPS_FILE.name}")
    for command in sorted(gaps):
        if results.get(command, {}).get("status") not in ("ok", "FAIL"):
            problems.append(f"{version} {command} is a listed gap but was not run "
                            f"({results.get(command, {}).get('reason', 'not a command of this version')})")
    return problems


def check_every_command(version: str, binary: Path, *, password, make_user, live_stack, cluster, tmp_path) -> None:
    """Run ``scripts/conformance`` for ``version`` alone against ``live_stack`` (a superadmin, a local
    agent) and fail on any disagreement with the gaps file for that version."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from accounts.models import User, UserRole
    from vfolders import services

    admin = make_user("conformance-admin@example.com", role=UserRole.SUPERADMIN)
    # the suite hashes with MD5 for speed, which the stack's own processes do not accept: `login` needs
    # a hash they verify
    hasher = PBKDF2PasswordHasher()
    User.objects.filter(pk=admin.pk).update(password=hasher.encode(password, hasher.salt()))
    services.ensure_default_storage_host()  # on the run's storage proxy: agents mount the path it reports
    live_stack.start_local_agent(AGENT_ID, cluster[1])

    report = tmp_path / "conformance.json"
    try:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "--endpoint", live_stack.url, "--access-key", admin.main_keypair.access_key,
             "--secret-key", admin.main_keypair.secret_key, "--email", admin.email, "--password", password,
             "--versions", version, f"--client={version}={binary}", "--jobs", "1", "--agent-id", AGENT_ID,
             "--allow-fail", "--json", str(report)],
            check=False, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    finally:
        live_stack.kill_local_kernels()  # a session the run could not destroy leaves no process behind
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    results = json.loads(report.read_text())[version]
    assert "login" in results and "admin user add" in results and "vfolder create" in results, done.stdout
    assert "session create" in results and "run" in results and "session download" in results, done.stdout
    gaps = {command for (gap_version, command) in conformance.read_gaps() if gap_version == version}
    problems = gap_report(version, results, gaps)
    failing = [f"{version} {command}  # {result['reason'][:120]}"
               for command, result in results.items() if result["status"] == "FAIL"]
    nl = "\n"
    assert not problems, (nl.join(problems) + f"{nl}{nl}the whole run:{nl}{done.stdout}"
                          f"{nl}the lines for {conformance.GAPS_FILE.name} as of this run ({version}):"
                          f"{nl}{nl.join(failing)}")


def official_client_fixture(version: str):
    """A version file's ``official_client`` fixture, asked for before ``live_stack``: a client left out
    locally skips before a stack starts."""
    @pytest.fixture
    def official_client(require):
        return client_or_skip(version, require)
    return official_client


def conformance_test(version: str):
    """A version file's one test: ``check_every_command`` for that version."""
    @pytest.mark.e2e
    @pytest.mark.django_db(transaction=True)
    def test(official_client, password, make_user, live_stack, cluster, tmp_path):
        check_every_command(version, official_client, password=password, make_user=make_user,
                            live_stack=live_stack, cluster=cluster, tmp_path=tmp_path)
    return test
