"""The session launcher in Chromium (issue 16, launcher): (a) launch with a preset and a
folder mounted read-only at a path of one's choosing on a real agent (the live stack:
daphne, Celery, a local-backend agent daemon), then read the mounted file in the session's
terminal; (b) an over-quota or impossible launch is refused at once with the reason beside
the form, and no session row is created.  Every page is audited (``ui_support.audit``:
screenshot under var/screenshots/ and axe-core, no critical violation)."""
from __future__ import annotations

import pytest
from sessions_ui_support import IMAGE, running, seed_python_image_and_agent
from ui_support import audit, expect

from helpers import exit_page_terminal, logged_in_page, open_page_terminal, type_in_page_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT_ID = "e2e-launcher-agent"
LOCAL_IMAGE = "local/shell:1.0"


def test_a_launch_with_a_preset_and_a_folder_mount_reads_the_file_in_the_terminal(
        live_stack, cluster, owner, password, browser, xterm_assets, settings):
    from sessions.models import ResourcePreset, Session
    from vfolders import services as vfolder_services

    # daphne checks passwords with the real hashers (the test process hashes with MD5 for speed)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    owner.set_password(password)
    owner.save(update_fields=["password"])
    vfolder_services.ensure_default_storage_host()
    folder = vfolder_services.create_folder(owner, name="notes")
    (folder.path / "readme.txt").write_text("hello from the mounted folder\n")
    ResourcePreset.objects.create(name="tiny", resource_slots={"cpu": "0.25", "mem": str(256 * 2**20)})
    live_stack.start_local_agent(AGENT_ID, cluster[1])

    with logged_in_page(browser, live_stack.url, owner, password, viewport={"width": 1280, "height": 1000}) as page:
        page.goto("/ui/sessions/new/")
        expect(page.locator("#launch-hint-text")).to_contain_text("Choose an image")
        audit(page, "launcher-form")

        page.select_option("#id_image", LOCAL_IMAGE)
        page.fill("#id_name", "with-notes")
        page.check('input[name="preset"][value="tiny"]')
        expect(page.locator("#id_slot_cpu")).to_have_value("0.25")  # the preset fills the amounts
        row = page.locator('#mount-table tr[data-folder="notes"]')
        row.locator('input[name="mounts"]').check()
        row.locator("select").select_option("ro")
        row.locator('input[type="text"]').fill("reading")
        row.locator('input[type="text"]').press("Tab")  # change: the hint asks the scheduler again
        expect(page.locator("#launch-hint-text")).to_have_text(
            f"This would start now on {AGENT_ID} (resource group default).", timeout=15_000)
        expect(page.locator("#bound-slot_cpu")).to_contain_text("largest agent")
        assert page.locator("#id_slot_cpu").get_attribute("max")  # the bound is the input's max too
        audit(page, "launcher-hint-start-now")

        page.click("#create-submit")
        session = live_stack.wait_for(lambda: Session.objects.filter(name="with-notes").first(),
                                      what="the session row")
        expect(page).to_have_url(f"{live_stack.url}/ui/sessions/{session.pk}/")
        [mount] = [m for m in session.vfolder_mounts if m["name"] == "notes"]
        assert mount["mode"] == "ro" and mount["container_path"] == "/home/work/reading"
        live_stack.wait_for(lambda: Session.objects.filter(pk=session.pk, status="RUNNING").exists(), timeout=90,
                            what="the session RUNNING")
        page.reload()
        expect(page.locator("#session-status")).to_have_text("RUNNING", timeout=15_000)
        audit(page, "launcher-session-running")

        open_page_terminal(page)
        # the local backend's home is the kernel's own /home/work: the mount is ./reading there
        type_in_page_terminal(page, "cat reading/readme.txt\n", "hello from the mounted folder")
        audit(page, "launcher-terminal-reads-the-file")
        exit_page_terminal(page)


def test_an_over_quota_launch_is_refused_with_the_reason_before_queueing(make_user, login, page, live_server):
    from agents import services as agent_services
    from sessions.models import Session

    seed_python_image_and_agent(agent_services.ensure_default_scaling_group())
    user = make_user("quota@example.com")
    policy = user.main_keypair.resource_policy
    policy.max_concurrent_sessions = 1
    policy.save()
    running(user, "first-one")

    login(user)
    page.goto("/ui/sessions/new/")
    page.select_option("#id_image", IMAGE)
    page.fill("#id_name", "second-one")
    page.fill("#id_slot_cpu", "1")
    page.fill("#id_slot_mem", "1g")
    page.locator("#id_slot_mem").press("Tab")
    expect(page.locator("#launch-hint-text")).to_contain_text(
        "This cannot start: You cannot run more than 1 concurrent session(s) (1 running or starting)")
    audit(page, "launcher-hint-over-quota")
    page.click("#create-submit")
    expect(page.locator("#form-errors")).to_contain_text("You cannot run more than 1 concurrent session(s)")
    audit(page, "launcher-refused-over-quota")
    assert list(Session.objects.values_list("name", flat=True)) == ["first-one"]

    # bigger than any agent of the group: refused beside the amounts, with the largest agent named
    page.fill("#id_slot_cpu", "12")
    page.click("#create-submit")
    expect(page.locator("#error-resources")).to_contain_text("cpu 12 asked, the largest agent has 8")
    audit(page, "launcher-refused-too-big")
    assert list(Session.objects.values_list("name", flat=True)) == ["first-one"]
