"""The official CLI's known gaps as the README shows them: ``tests/e2e/cli_conformance_gaps.txt`` names
only the three client versions, and the README's list is the one ``scripts/conformance`` renders from it.
The runs that keep that file true are one test file per client version, so that ``--dist loadfile``
hands them to different workers: tests/e2e/test_cli_conformance_23.py, _24.py and _26.py (their shared
run is in tests/cli_conformance_support.py)."""
from __future__ import annotations

from cli_conformance_support import CLIENTS, conformance


def test_the_readme_lists_exactly_the_known_gaps():
    text = conformance.README.read_text()
    section = conformance.readme_section(text)
    assert section is not None, f"README.md lacks the {conformance.README_START} section"
    assert section == conformance.gaps_markdown(conformance.read_gaps()), (
        "README.md's known gaps differ from tests/e2e/cli_conformance_gaps.txt: run scripts/conformance --update-readme")


def test_the_gaps_file_names_only_the_three_client_versions():
    versions = {version for (version, _command) in conformance.read_gaps()}
    assert versions <= set(CLIENTS), versions
