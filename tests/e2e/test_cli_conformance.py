"""The official CLI, all of it, through ``scripts/conformance``: with each client version
(23.9.10 always; 24.9.14 and 26.9.6 where scripts/test found Python 3.12 / 3.13 and
installed them), every admin and vfolder command, every session command a local agent
serves (a session created, ``run -c`` in it, files uploaded, listed and downloaded,
its logs, restart, rename and destroy) and login/ps/logout in session mode runs
against a live stack.  What works today must keep working, and what fails must be
a gap named in ``tests/e2e/cli_conformance_gaps.txt``; a listed gap that works now
fails the test too, so that list (and the README's copy of it) stays true."""
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

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "conformance"
AGENT_ID = "conformance-agent"
RUN_TIMEOUT = 1800
# version -> (variable scripts/test exports, virtualenv under the checkout, the Python it needs)
CLIENTS = {
    "23.9.10": ("BACKENDAI_CLIENT_BIN", ".venv-client", "3.11"),
    "24.9.14": ("BACKENDAI_CLIENT24_BIN", ".venv-client-24", "3.12"),
    "26.9.6": ("BACKENDAI_CLIENT26_BIN", ".venv-client-26", "3.13"),
}


def _load_script():
    """The script itself as a module (it has no .py name): its gaps file reader and README
    renderer are the ones this test checks against, never a copy."""
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


def installed_binaries(require) -> dict[str, Path]:
    """Every client version this machine runs (see ``client_binary``), by version."""
    binaries = {version: client_binary(version, require) for version in CLIENTS}
    return {version: binary for version, binary in binaries.items() if binary is not None}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_every_command_of_the_official_cli_works_or_is_a_listed_gap(
        require, password, make_user, live_stack, cluster, tmp_path):
    """The three versions run side by side against one live stack (each with its own users,
    domains and folders), so the suite pays for the slowest client rather than for all three."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from accounts.models import User, UserRole
    from vfolders import services

    binaries = installed_binaries(require)
    assert "23.9.10" in binaries, "the official client 23.9.10 always runs"
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
             "--versions", ",".join(binaries), *(f"--client={v}={b}" for v, b in binaries.items()),
             "--jobs", str(len(binaries)), "--agent-id", AGENT_ID, "--allow-fail", "--json", str(report)],
            cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    finally:
        live_stack.kill_local_kernels()  # a session the run could not destroy leaves no process behind
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    everything = json.loads(report.read_text())
    problems, failing = [], []
    for version in binaries:
        results = everything[version]
        assert "login" in results and "admin user add" in results and "vfolder create" in results, done.stdout
        assert "session create" in results and "run" in results and "session download" in results, done.stdout
        gaps = {command for (gap_version, command) in conformance.read_gaps() if gap_version == version}
        problems += gap_report(version, results, gaps)
        failing += [f"{version} {command}  # {result['reason'][:120]}"
                    for command, result in results.items() if result["status"] == "FAIL"]
    nl = "\n"
    assert not problems, (nl.join(problems) + f"{nl}{nl}the whole run:{nl}{done.stdout}"
                          f"{nl}the lines for {conformance.GAPS_FILE.name} as of this run:{nl}{nl.join(failing)}")


def test_the_readme_lists_exactly_the_known_gaps():
    text = conformance.README.read_text()
    section = conformance.readme_section(text)
    assert section is not None, f"README.md lacks the {conformance.README_START} section"
    assert section == conformance.gaps_markdown(conformance.read_gaps()), (
        "README.md's known gaps differ from tests/e2e/cli_conformance_gaps.txt: run scripts/conformance --update-readme")


def test_the_gaps_file_names_only_the_three_client_versions():
    versions = {version for (version, _command) in conformance.read_gaps()}
    assert versions <= set(CLIENTS), versions
