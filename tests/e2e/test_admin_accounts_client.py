"""The official client's (23.9.10) account administration against a live server: a
superadmin adds a user, a keypair for that user and a keypair resource policy, and
moves the keypair to that policy with ``admin keypair update``; the owner gets the new
keypair's secret the way the security rule allows (regenerating it on their API keys
page: the admin who made it is never shown it) and uses it.  With real processes and a
local agent, the policy limits that keypair to one session and the second create waits
with the policy's limit named as the reason."""
from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NEW_PASSWORD = "Newbie-horse-battery-42"


def cli_json(client, keypair, *args) -> dict:
    """Run ``backend.ai --output json ARGS`` and parse its JSON document (the client prints an
    APIVersionWarning before it, as our v8 is newer than its v7)."""
    done = client.cli(keypair, "--output", "json", *args)
    assert done.returncode == 0, f"{args}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return json.loads(done.stdout[done.stdout.index("{"):])


def the_owners_secret(client, email: str, access_key: str) -> str:
    """The owner regenerates the keypair's secret on their API keys page (shown to them once)."""
    from accounts.models import Keypair, User

    client.force_login(User.objects.get(email=email))
    page = client.post("/ui/keys/action/", {"access_key": access_key, "action": "regenerate"}, follow=True)
    secret = Keypair.objects.get(pk=access_key).secret_key
    assert page.status_code == 200 and secret in page.content.decode()
    return secret


def add_user_keypair_and_policy(client, root, email: str, policy: str) -> str:
    """``admin user add`` → ``admin keypair-resource-policy add`` → ``admin keypair add`` →
    ``admin keypair update --resource-policy``, as a superadmin; returns the new access key."""
    from accounts.models import Keypair, KeypairResourcePolicy, User

    added = cli_json(client, root, "admin", "user", "add", "default", email, NEW_PASSWORD, "-n", "New Bie")
    assert added["ok"] is True and added["user"]["email"] == email, added
    user = User.objects.get(email=email)
    # (a live stack hashes with the production hashers, which this process is not configured with)
    assert user.full_name == "New Bie" and user.has_usable_password() and user.main_keypair_id

    made = cli_json(client, root, "admin", "keypair-resource-policy", "add", policy, "--max-concurrent-sessions", "1")
    assert made["ok"] is True, made
    assert KeypairResourcePolicy.objects.get(pk=policy).max_concurrent_sessions == 1

    keypair = cli_json(client, root, "admin", "keypair", "add", email, "default")
    assert keypair["ok"] is True, keypair
    access_key = keypair["access_key"]
    # the admin is not the keypair's owner: its secret is not shown to them
    assert keypair["secret_key"] == "********"
    assert Keypair.objects.get(pk=access_key).user == user

    updated = cli_json(client, root, "admin", "keypair", "update", access_key, "--resource-policy", policy)
    assert updated["ok"] is True, updated
    assert Keypair.objects.get(pk=access_key).resource_policy_id == policy
    return access_key


def test_a_superadmin_adds_a_user_a_keypair_and_a_policy_and_the_new_keypair_works(make_user, official_client,
                                                                                    client):
    from accounts.models import User, UserRole

    root = make_user("root@example.com", role=UserRole.SUPERADMIN).main_keypair
    access_key = add_user_keypair_and_policy(official_client, root, "newbie@example.com", "single")
    assert User.objects.get(email="newbie@example.com").check_password(NEW_PASSWORD)

    listed = cli_json(official_client, root, "admin", "user", "list")
    assert "newbie@example.com" in {item["email"] for item in listed["items"]}
    keys = cli_json(official_client, root, "admin", "keypair", "list", "-u", "newbie@example.com")
    assert access_key in {item["access_key"] for item in keys["items"]} and keys["total_count"] == 2
    policies = cli_json(official_client, root, "admin", "keypair-resource-policy", "list")
    assert "single" in {item["name"] for item in policies["items"]}

    secret = the_owners_secret(client, "newbie@example.com", access_key)
    ps = cli_json(official_client, (access_key, secret), "ps")
    assert ps["total_count"] == 0 and ps["items"] == []
    info = cli_json(official_client, (access_key, secret), "admin", "keypair", "info")
    shown = info["items"][0]
    assert shown["access_key"] == access_key and shown["resource_policy"] == "single"
    assert shown["secret_key"] == "********"
    me = cli_json(official_client, (access_key, secret), "admin", "user", "info")
    assert me["items"][0]["email"] == "newbie@example.com"


def test_the_policy_set_with_the_cli_limits_the_keypair_to_one_session(live_stack, cluster, stack_client,
                                                                         make_user, client):
    from accounts.models import UserRole
    from sessions.lifecycle import SessionStatus
    from sessions.models import Session
    from sessions.scheduler import wait_reasons

    live_stack.start_local_agent("e2e-accounts", cluster[1])
    root = make_user("root@example.com", role=UserRole.SUPERADMIN).main_keypair
    access_key = add_user_keypair_and_policy(stack_client, root, "limited@example.com", "one-at-a-time")
    secret = the_owners_secret(client, "limited@example.com", access_key)
    mine = (access_key, secret)

    first = stack_client.cli(mine, "session", "create", "-t", "first-one", "-r", "cpu=0.25", "-r", "mem=256m",
                             "local/shell:1.0")
    assert first.returncode == 0, first.stdout + first.stderr
    assert Session.objects.get(name="first-one").status == SessionStatus.RUNNING
    second = stack_client.cli(mine, "session", "create", "--enqueue-only", "-t", "second-one", "-r", "cpu=0.25",
                              "-r", "mem=256m", "local/shell:1.0")
    assert second.returncode == 0, second.stdout + second.stderr

    def waiting_for_the_limit():
        session = Session.objects.get(name="second-one")
        return [r for r in wait_reasons(session) if r.startswith("concurrency:")]

    reasons = live_stack.wait_for(waiting_for_the_limit, timeout=60, what="the second session to wait")
    assert "more than 1 concurrent session" in reasons[0]
    assert Session.objects.get(name="second-one").status == SessionStatus.PENDING
