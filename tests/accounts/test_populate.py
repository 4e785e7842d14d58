"""The populate command: a usable fresh database, safe to run twice."""
import json
import stat

import pytest
from django.core.management import call_command

from accounts.models import Domain, Keypair, KeypairResourcePolicy, Project, ProjectResourcePolicy, User, UserResourcePolicy

pytestmark = pytest.mark.django_db


def _counts():
    return tuple(m.objects.count() for m in (Domain, Project, User, Keypair, KeypairResourcePolicy,
                                             UserResourcePolicy, ProjectResourcePolicy))


def test_it_creates_the_defaults_and_a_superadmin(tmp_path):
    creds = tmp_path / "credentials.json"
    call_command("populate", credentials=creds, url="http://127.0.0.1:9999")
    admin = User.objects.get(email="admin@example.com")
    assert admin.is_superadmin and admin.projects.filter(name="default", domain_id="default").exists()
    body = json.loads(creds.read_text())
    assert body["url"] == "http://127.0.0.1:9999"
    assert admin.check_password(body["admin"]["password"])
    assert body["access_key"] == admin.main_keypair_id and body["secret_key"] == admin.main_keypair.secret_key
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600


def test_running_it_twice_changes_nothing(tmp_path):
    creds = tmp_path / "credentials.json"
    call_command("populate", credentials=creds)
    first, counts = creds.read_text(), _counts()
    call_command("populate", credentials=creds)
    assert creds.read_text() == first and _counts() == counts
    assert User.objects.get(email="admin@example.com").check_password(json.loads(first)["admin"]["password"])
