"""The official CLI 24.9.14, all of it, through ``scripts/conformance --versions 24.9.14`` against a live
stack of its own (this client runs where scripts/test found Python 3.12 and installed it; under CI=true
a missing client fails, never skips).  Every admin and vfolder command, every session command a local
agent serves and login/ps/logout in session mode: what works today must keep working, what fails must be
a 24.9.14 gap named in ``tests/e2e/cli_conformance_gaps.txt``, and a listed gap that works now fails the
test too.  One file per version so that ``--dist loadfile`` gives the versions to different workers
(tests/cli_conformance_support.py has the shared run)."""
from __future__ import annotations

import pytest

from cli_conformance_support import check_every_command, client_or_skip

VERSION = "24.9.14"


@pytest.fixture
def official_client(require):
    """Asked for before ``live_stack``: a client left out locally skips before a stack starts."""
    return client_or_skip(VERSION, require)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_every_command_of_the_official_cli_24_9_14_works_or_is_a_listed_gap(
        official_client, password, make_user, live_stack, cluster, tmp_path):
    check_every_command(VERSION, official_client, password=password, make_user=make_user, live_stack=live_stack,
                        cluster=cluster, tmp_path=tmp_path)
