"""What every browser journey of the web UI shares: a screenshot kept as a CI artifact
under ``var/screenshots/`` and an axe-core audit of the page in view.

``audit(page, name)`` saves ``var/screenshots/<name>.png`` (full page), injects axe-core
from ``node_modules/axe-core/axe.min.js`` (installed by ``scripts/test`` from
package.json; never from a CDN) and fails on any *critical* or *serious* violation (colour
contrast, links told apart by colour alone...), naming the rule and the offending elements.
Every finding is written beside the screenshot as ``<name>.axe.json`` for a human to read.

``serious=False`` fails on critical violations only (the test of the audit itself uses it).  ``allow`` waives serious
findings in markup we do not write, by rule and by the CSS selector of that markup's
container, e.g. ``allow={"color-contrast": ".swagger-ui"}``: a node is waived only if it
lies inside that container; a critical violation is never waived.

Playwright's ``add_script_tag(content=...)`` puts an inline script in the page, which our
Content-Security-Policy refuses; the audit therefore hands axe's source to ``page.evaluate``
as an expression (the DevTools protocol runs it; no DOM script element, no ``eval``), which
the CSP does not govern."""
from __future__ import annotations

import json
import os
from pathlib import Path

try:
    from playwright.sync_api import expect  # re-exported: ``from ui_support import audit, expect``
except ImportError:  # the ``browser`` fixture reports it through require()
    expect = None

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(os.environ.get("UI_SCREENSHOTS_DIR") or ROOT / "var" / "screenshots")

_axe_source: str | None = None


def axe_source() -> str:
    global _axe_source
    if _axe_source is None:
        if not AXE.is_file():
            raise AssertionError(f"axe-core is missing at {AXE}: run scripts/test (npm ci) first")
        _axe_source = AXE.read_text()
    return _axe_source


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _axe_run(page) -> list[dict]:
    """axe-core's violations for the page in view (WCAG 2.x A and AA rules and best practices), every node."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source() + "\n;undefined")
    result = page.evaluate("async () => await window.axe.run(document, {resultTypes: ['violations']})")
    return [
        {
            "id": v["id"],
            "impact": v.get("impact"),
            "help": v.get("help"),
            "nodes": [n.get("target") for n in v.get("nodes", [])],
        }
        for v in result["violations"]
    ]


def axe_violations(page) -> list[dict]:
    """axe-core's violations for the page in view, at most 10 nodes named per rule."""
    return [{**v, "nodes": v["nodes"][:10]} for v in _axe_run(page)]


def _inside(page, target, container: str) -> bool:
    """Whether the node axe names by ``target`` (its CSS selector path) lies inside ``container``."""
    if not isinstance(target, list) or len(target) != 1 or not isinstance(target[0], str):
        return False  # in a frame or a shadow root: never waived
    return page.evaluate("([sel, box]) => { const el = document.querySelector(sel);"
                         " return !!el && !!el.closest(box); }", [target[0], container])


def _unwaived(page, violation: dict, allow: dict[str, str]) -> dict | None:
    """``violation`` less the nodes ``allow`` waives for its rule; None if it waives them all."""
    container = allow.get(violation["id"])
    if not container:
        return violation
    nodes = [t for t in violation["nodes"] if not _inside(page, t, container)]
    return {**violation, "nodes": nodes} if nodes else None


def audit(page, name: str, *, serious: bool = True, allow: dict[str, str] | None = None) -> list[dict]:
    """Screenshot, then axe: fails on critical violations and (``serious=True``, the default) on
    serious ones not waived by ``allow`` ({rule id: CSS selector of the third-party markup's container});
    returns every violation found."""
    allow = dict(allow or {})
    if allow and not serious:
        raise ValueError("allow waives serious violations: it needs serious=True")
    screenshot(page, name)
    violations = _axe_run(page)
    (SCREENSHOTS / f"{name}.axe.json").write_text(
        json.dumps([{**v, "nodes": v["nodes"][:10]} for v in violations], indent=2))
    failing = [v for v in violations if v["impact"] == "critical"]
    if serious:
        failing += [w for v in violations if v["impact"] == "serious" and (w := _unwaived(page, v, allow))]
    failing = [{**v, "nodes": v["nodes"][:10]} for v in failing]
    levels = "critical or serious" if serious else "critical"
    assert not failing, f"axe-core: {levels} violations on {page.url} ({name}): {json.dumps(failing, indent=2)}"
    return [{**v, "nodes": v["nodes"][:10]} for v in violations]
