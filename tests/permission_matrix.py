"""The permission matrix: run one request as each role and check what it gets.

Roles (fixtures in ``tests/conftest.py``):

* ``owner``          the user whose data the request is about;
* ``member``         an ordinary user in the same project as the owner;
* ``outsider``       an ordinary user of another domain;
* ``foreign_admin``  the domain admin of that other domain;
* ``superadmin``.

A ``Case`` names a request (``call(api, world, role)`` -> response, ``api`` being a
client that signs as that role's main keypair), the status each role must get,
and optionally a ``marker(world)`` string (an id of the owner's data) with the
roles that must see it in the answer; the others must not.  Whatever the
status, no answer may contain a secret its caller does not own (``World.secrets``:
every keypair's secret key and SSH private key, password hashes) nor a system
secret (agent and proxy-worker tokens, the proxy worker's signing secret, a
registry password, the scaling group's app-proxy token, Django's
``SECRET_KEY``).  Use ``check(case, role, world, signed)`` from a test
parametrized over ``cases × ROLES``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

ROLES = ("owner", "member", "outsider", "foreign_admin", "superadmin")
#: Expectations shared by many cases: every role gets 200 / only the superadmin does.
ALL_OK = {role: 200 for role in ROLES}
SUPERADMIN_ONLY = {**{role: 403 for role in ROLES}, "superadmin": 200}


@dataclass
class World:
    users: dict  # role -> User
    objects: dict = field(default_factory=dict)  # anything a case needs: "session", "folder"...
    system_secrets: list = field(default_factory=list)

    def secrets_of(self, user) -> list[str]:
        """Every secret ``user`` owns, read fresh from the database."""
        from accounts.models import Keypair, User

        found = []
        for keypair in Keypair.objects.filter(user=user):
            found.append(keypair.secret_key)
            if keypair.ssh_private_key.strip():
                found.append(keypair.ssh_private_key.strip())
                # the key body without its armour or line breaks (single lines would not do: the
                # first ones are the same in every OpenSSH key)
                lines = keypair.ssh_private_key.strip().splitlines()
                found.append("".join(line for line in lines if not line.startswith("-----")))
        password = User.objects.filter(pk=user.pk).values_list("password", flat=True).first()
        if password:
            found.append(password)
            found.extend(part for part in password.split("$") if len(part) >= 16)
        return found

    def foreign_secrets(self, viewer) -> list[str]:
        """The secrets a response to ``viewer`` must never contain."""
        result = list(self.system_secrets)
        for user in self.users.values():
            if user.pk != viewer.pk:
                result.extend(self.secrets_of(user))
        return [s for s in result if s]


@dataclass
class Case:
    name: str
    call: Callable  # (api, world, role) -> response
    expect: dict  # role -> status (int) or a tuple of acceptable statuses
    marker: Optional[Callable] = None  # world -> a string only allowed viewers get
    sees: Optional[tuple] = None  # roles that must see the marker (default: those expected to get 2xx)
    unchanged: Optional[Callable] = None  # world -> a snapshot that refused calls must not change

    def __str__(self):
        return self.name


def body_of(response) -> str:
    if getattr(response, "streaming", False):
        content = b"".join(response.streaming_content)
        response.streaming_content = [content]  # a stream is read once: the next check reads it again
    else:
        content = response.content
    text = content.decode("utf-8", "replace")
    headers = "\n".join(f"{k}: {v}" for k, v in response.items())
    return headers + "\n\n" + text


def assert_no_foreign_secret(response, viewer, world: World, where: str = ""):
    text = body_of(response)
    for secret in world.foreign_secrets(viewer):
        assert secret not in text, f"{where}: the answer to {viewer.email} holds a secret that is not theirs"


def check(case: Case, role: str, world: World, signed) -> None:
    """Run ``case`` as ``role`` and assert the status, the visibility of the
    owner's data, that nothing changed when refused, and that no foreign secret leaks."""
    viewer = world.users[role]
    before = case.unchanged(world) if case.unchanged else None
    response = case.call(signed(viewer), world, role)
    expected = case.expect[role]
    expected = expected if isinstance(expected, tuple) else (expected,)
    where = f"{case.name} as {role}"
    assert response.status_code in expected, f"{where}: {response.status_code} {body_of(response)[:2000]}"
    assert_no_foreign_secret(response, viewer, world, where)
    ok = 200 <= response.status_code < 300
    if case.marker is not None:
        sees = case.sees if case.sees is not None else tuple(r for r in ROLES if _is_ok(case.expect[r]))
        visible = case.marker(world) in body_of(response)
        assert visible == (role in sees), f"{where}: the owner's data is {'' if visible else 'not '}in the answer"
    if case.unchanged is not None and not ok:
        assert case.unchanged(world) == before, f"{where}: a refused request changed something"


def _is_ok(expected) -> bool:
    expected = expected if isinstance(expected, tuple) else (expected,)
    return all(200 <= s < 300 for s in expected)


def params(cases: list[Case]):
    """``pytest.mark.parametrize`` arguments: one test per case and role."""
    import pytest

    return [pytest.param(case, role, id=f"{case.name}-{role}") for case in cases for role in ROLES]


# --- GraphQL requests, for the matrix and for plain tests -------------------------------------------

def gql_post(api, query: str, variables: Optional[dict] = None):
    """POST the document to ``/admin/gql`` as ``api`` (a signed client); the raw response."""
    return api.post("/admin/gql", {"query": query, "variables": variables or {}})


def gql_data(response) -> dict:
    """The ``data`` of a GraphQL answer that must have succeeded (200, no ``errors``)."""
    assert response.status_code == 200, response.content
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def gql_case(query: str, variables=None) -> Callable:
    """A matrix ``call`` posting the document; ``variables`` may be ``world -> dict``."""
    return lambda api, world, role: gql_post(api, query, variables(world) if callable(variables) else variables)
