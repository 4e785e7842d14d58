"""vfolders sits below sessions (and beside agents): none of its modules imports
them, not even inside a function; what it needs from above comes through
``vfolders.hooks``, which the higher apps fill in their ``AppConfig.ready()``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vfolders
from vfolders import hooks

ABOVE_OR_BESIDE = ("sessions", "appproxy", "agents", "backendai.urls", "backendai.asgi", "backendai.api.graphql")
SOURCES = sorted(p for p in Path(vfolders.__file__).parent.rglob("*.py") if "migrations" not in p.parts)


def _imported(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(Path(vfolders.__file__).parent)) for p in SOURCES])
def test_no_vfolders_module_imports_a_higher_or_sibling_app(path):
    bad = [name for name in _imported(path) if name.split(".")[0] in ("sessions", "appproxy", "agents")
           or name in ABOVE_OR_BESIDE]
    assert bad == []
    assert "importlib" not in _imported(path)


def test_the_sessions_app_registers_its_mount_lookup_once():
    from sessions.folder_mounts import live_sessions_mounting

    assert hooks.mount_lookups().count(live_sessions_mounting) == 1
    hooks.register_mount_lookup(live_sessions_mounting)
    assert hooks.mount_lookups().count(live_sessions_mounting) == 1
