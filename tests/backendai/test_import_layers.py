"""The import layers (pyproject's ``[tool.importlinter]``, docs/architecture.md): the
project keeps them, and the contract really refuses an upward import or a Django
import in a daemon, in a module-level import or one written inside a function."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["backendai", "accounts", "agents", "vfolders", "sessions", "appproxy", "storageproxy"]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


@pytest.fixture
def copy_of_the_project(tmp_path):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_the_project_keeps_every_import_contract():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_unchanged_copy_keeps_the_contracts(copy_of_the_project):
    result = lint(copy_of_the_project)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path,line,refusal,chain", [
    pytest.param("agents/services.py", "\n\ndef _upward():\n    from sessions import services\n\n    return services\n",
                 "agents is not allowed to import sessions", "agents.services -> sessions.services",
                 id="a lower layer importing a higher one inside a function"),
    pytest.param("vfolders/models.py", "\nfrom agents import models as _agent_models  # noqa\n",
                 "vfolders is not allowed to import agents", "vfolders.models -> agents.models",
                 id="agents and vfolders importing each other"),
    pytest.param("backendai/slots.py", "\nimport accounts.models  # noqa\n",
                 "backendai.slots is not allowed to import accounts", "backendai.slots -> accounts.models",
                 id="plumbing importing an app"),
    pytest.param("agents/daemon/agent.py", "\nimport django.conf  # noqa\n",
                 "agents.daemon is not allowed to import django", "agents.daemon.agent -> django",
                 id="django in the agent daemon"),
    pytest.param("storageproxy/fs.py", "\nimport backendai.signing  # noqa\n",
                 "storageproxy is not allowed to import backendai", "storageproxy.fs -> backendai.signing",
                 id="the storage proxy importing a manager package"),
    pytest.param("vfolders/models.py", "\nfrom storageproxy import fs as _fs  # noqa\n",
                 "vfolders is not allowed to import storageproxy.fs", "vfolders.models -> storageproxy.fs",
                 id="the manager importing the storage proxy's disk code"),
])
def test_it_refuses_a_wrong_import(copy_of_the_project, path, line, refusal, chain):
    append(copy_of_the_project / path, line)
    result = lint(copy_of_the_project)
    assert result.returncode != 0
    assert refusal in result.stdout and chain in result.stdout


def import_cycles(graph: grimp.ImportGraph, packages) -> list[list[str]]:
    """The strongly connected components (more than one module) of the project's import
    graph, imports inside functions included (Tarjan's algorithm, iteratively)."""
    modules = sorted(m for m in graph.modules if m.split(".")[0] in packages)
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i.split(".")[0] in packages)
             for m in modules}
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], 0
    for root in modules:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = edges.get(node, [])
            if position < len(targets):
                work.append((node, position + 1))
                target = targets[position]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return cycles


def test_the_import_graph_has_no_cycle():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert import_cycles(graph, PACKAGES) == []


def test_the_cycle_finder_finds_a_cycle_written_inside_a_function():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    graph.add_import(importer="sessions.lifecycle", imported="sessions.services")
    assert ["sessions.lifecycle", "sessions.services"] in [
        [m for m in cycle if m in ("sessions.lifecycle", "sessions.services")] for cycle in import_cycles(graph, PACKAGES)]
