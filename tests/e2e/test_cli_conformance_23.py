"""The official CLI 23.9.10, all of it, against a live stack of its own (this client always runs: scripts/test installs it on Python 3.11; under
CI=true a missing client fails, never skips): what works today must keep working, what fails must be a
23.9.10 gap named in ``tests/e2e/cli_conformance_gaps.txt``.  One file per version so that ``--dist
loadfile`` gives the versions to different workers; the run is tests/cli_conformance_support.py's."""
from __future__ import annotations

from cli_conformance_support import conformance_test, official_client_fixture

VERSION = "23.9.10"

official_client = official_client_fixture(VERSION)
test_every_command_of_the_official_cli_23_9_10_works_or_is_a_listed_gap = conformance_test(VERSION)
