"""``backend.ai admin resource ...`` of each official client against a live server with a
finished session in March 2025: the usage reports print the session, the registry listing
prints the hostnames (never a password), ``recalculate-usage`` says it is done."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

VERSIONS = ("23.9.10", "24.9.14", "26.9.6")


def at(day: str, hour: int = 0) -> datetime:
    return timezone.make_aware(datetime.strptime(day, "%Y%m%d") + timedelta(hours=hour),
                               timezone.get_current_timezone())


@pytest.fixture
def usage_world(make_user):
    """A superadmin, and a user's session that ran on node-1 from 10 March 09:00 to 12 March 21:00."""
    from accounts.models import UserRole
    from agents import services as agent_services
    from agents.models import ContainerRegistry
    from helpers import seed_http_image_and_agent
    from sessions import services as session_services
    from sessions.lifecycle import KernelStatus, SessionStatus
    from sessions.models import Kernel, Session

    root = make_user("usage-root@example.com", role=UserRole.SUPERADMIN)
    user = make_user("usage-user@example.com")
    _, agent = seed_http_image_and_agent(agent_services.ensure_default_scaling_group())
    session = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0", agent=agent,
                                                       name="marchsess", slots={"cpu": "2", "mem": "1073741824"})
    history = [{"status": "SCHEDULED", "timestamp": at("20250310", 9).isoformat()}]
    Kernel.objects.filter(session=session).update(created_at=at("20250310", 9), terminated_at=at("20250312", 21),
                                                  status=KernelStatus.TERMINATED, status_history=history)
    Session.objects.filter(pk=session.pk).update(created_at=at("20250310", 9), terminated_at=at("20250312", 21),
                                                 status=SessionStatus.TERMINATED)
    ContainerRegistry.objects.create(registry_name="cr.example.com", url="https://cr.example.com",
                                     username="robot", password="registry-secret-71c3")
    return root, str(session.project_id)


def output_of(done) -> str:
    return f"rc={done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


@pytest.mark.parametrize("version", VERSIONS)
def test_admin_resource_commands_print_what_the_server_computed(version, usage_world, versioned_client):
    root, project = usage_world
    client = versioned_client(version)
    root_keys = root.main_keypair

    done = client.cli(root_keys, "admin", "resource", "usage-per-month", "202503", project)
    assert done.returncode == 0, output_of(done)
    assert f"Group: default ({project})" in done.stdout and "Containers (1):" in done.stdout, output_of(done)
    assert "Identity: marchsess" in done.stdout and "Image: bai-test/http:1.0" in done.stdout
    assert "Duration: 3 day(s)" in done.stdout and "Allocated: 2.0 core(s) / 1073741824 mem (bytes)" in done.stdout

    done = client.cli(root_keys, "admin", "resource", "usage-per-period", project, "20250301", "20250331")
    assert done.returncode == 0, output_of(done)
    if version == "26.9.6":
        assert f"Project: default ({project})" in done.stdout and "Domain: default" in done.stdout, output_of(done)
    else:  # these CLIs test the answer (a list, as the real manager's) for 'g_id'
        assert "No usage information during the period." in done.stdout, output_of(done)

    listing = "docker-registries" if version == "23.9.10" else "container-registries"
    done = client.cli(root_keys, "admin", "resource", listing)
    assert done.returncode == 0 and done.stdout.split() == ["cr.example.com"], output_of(done)
    assert "registry-secret-71c3" not in done.stdout + done.stderr

    done = client.cli(root_keys, "admin", "resource", "recalculate-usage")
    assert done.returncode == 0 and "Resource allocation is re-calculated." in done.stdout, output_of(done)


def test_a_user_is_refused_the_usage_report(usage_world, make_user, versioned_client):
    _, project = usage_world
    done = versioned_client("23.9.10").cli(make_user("nosy@example.com").main_keypair, "admin", "resource",
                                           "usage-per-month", "202503", project)
    assert done.returncode != 0 and "403" in done.stdout + done.stderr, output_of(done)
