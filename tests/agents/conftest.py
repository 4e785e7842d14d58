"""The agents tests' permission-matrix world (``agents_gql_support.build_world``)."""
from __future__ import annotations

import pytest

from agents_gql_support import build_world


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin):
    return build_world(owner, member, outsider, foreign_admin, superadmin)
