"""Folders in a real browser (Debian's Chromium through Playwright) against a live server and the
run's storage proxy (issue 16): the folder list with sizes and quota usage (loaded after the page), the file browser, and
an upload whose name exists: the conflict dialog opens with the focus in it, "keep both" stores the
new file as "name (1).ext" beside the old one, Escape skips, one answer can serve a whole batch; a
dropped file is uploaded.  axe-core audits every page."""
from __future__ import annotations

import time

import pytest
from ui_support import audit, expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("storage_host")]


def test_uploading_a_name_that_exists_and_keeping_both(make_user, login, page, tmp_path, storage_proxy):
    from accounts.models import UserResourcePolicy
    from vfolders import services

    user = make_user("browser-keep-both@example.com")
    UserResourcePolicy.objects.filter(pk=user.resource_policy_id).update(max_vfolder_count=4,
                                                                          max_quota_scope_size=2**30)
    folder = services.create_folder(user, name="reports")
    (folder.path / "notes.txt").write_bytes(b"the old notes")
    (folder.path / "drafts").mkdir()
    login(user)

    page.goto("/ui/folders/")
    expect(page.locator("#folder-count")).to_contain_text("1 of 4 folders")
    expect(page.locator('#my-folders tr[data-folder="reports"]')).to_contain_text("read-write-delete")
    # the sizes come after the page, in one fragment: the folder's cell and its scope's gauge
    expect(page.locator(f"#size-{folder.id}")).to_contain_text("13 bytes of 1.0 GB")
    expect(page.locator("#scope-usage .vf-scope")).to_contain_text("13 bytes of 1.0 GB")
    expect(page.locator("[data-size-pending]")).to_have_count(0)
    audit(page, "folders-list")

    page.click('#my-folders tr[data-folder="reports"] a')
    expect(page.locator("#breadcrumbs")).to_contain_text("reports")
    expect(page.locator("#folder-size")).to_contain_text("of the 1.0")
    audit(page, "folders-browse")

    source = tmp_path / "notes.txt"
    source.write_bytes(b"the new notes")
    page.set_input_files("#upload-files", str(source))
    page.click("#upload-button")
    dialog = page.locator("#conflict-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("notes.txt")
    expect(page.locator("#conflict-keep")).to_be_focused()  # the focus moved into the dialog
    audit(page, "folders-conflict-dialog")
    page.click("#conflict-keep")
    expect(page.locator('#file-table tr[data-name="notes (1).txt"]')).to_be_visible(timeout=30_000)
    expect(page.locator('#file-table tr[data-name="notes.txt"]')).to_be_visible()
    assert (folder.path / "notes.txt").read_bytes() == b"the old notes"
    assert (folder.path / "notes (1).txt").read_bytes() == b"the new notes"
    audit(page, "folders-after-keep-both")

    # Escape in the dialog skips the file: nothing is sent, nothing changes
    source.write_bytes(b"skipped")
    page.set_input_files("#upload-files", str(source))
    page.click("#upload-button")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#upload-progress")).to_contain_text("Skipped")
    expect(dialog).to_be_hidden()
    assert (folder.path / "notes.txt").read_bytes() == b"the old notes"
    assert sorted(p.name for p in folder.path.iterdir()) == ["drafts", "notes (1).txt", "notes.txt"]

    # "do the same for the others": one question for a batch of existing names
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "notes.txt").write_bytes(b"v3 notes")
    (batch / "notes (1).txt").write_bytes(b"v3 copy")
    page.set_input_files("#upload-files", [str(batch / "notes.txt"), str(batch / "notes (1).txt")])
    page.click("#upload-button")
    expect(dialog).to_be_visible()
    page.check("#conflict-all")
    page.click("#conflict-overwrite")
    # no second question: the second file is sent too (a dialog left open would hold it back)
    deadline = time.monotonic() + 30
    while (folder.path / "notes (1).txt").read_bytes() != b"v3 copy" and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert (folder.path / "notes.txt").read_bytes() == b"v3 notes"
    assert (folder.path / "notes (1).txt").read_bytes() == b"v3 copy"
    expect(dialog).to_be_hidden()
    page.wait_for_load_state("load")

    # a file dropped on the drop zone is uploaded the same way (a new name: no question)
    page.locator("#drop-zone").evaluate("""zone => {
        const data = new DataTransfer();
        data.items.add(new File(["dropped bytes"], "dropped.txt", {type: "text/plain"}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
    }""")
    expect(page.locator('#file-table tr[data-name="dropped.txt"]')).to_be_visible(timeout=30_000)
    assert (folder.path / "dropped.txt").read_bytes() == b"dropped bytes"

    # the breadcrumbs lead back from a subdirectory
    page.click('#file-table tr[data-name="drafts"] a.vf-dir')
    expect(page.locator("#empty-dir")).to_be_visible()
    audit(page, "folders-subdirectory")
    page.locator("#breadcrumbs a", has_text="reports").click()
    expect(page.locator('#file-table tr[data-name="notes (1).txt"]')).to_be_visible()

    # sizes that cannot be loaded (here: a page that is not the fragment, as the login page after the
    # session expired) are not swapped in; the placeholders say "unknown"
    page.route("**/ui/folders/sizes/", lambda route: route.fulfill(status=200, content_type="text/html",
                                                                   body="<html><body>Log in</body></html>"))
    page.goto("/ui/folders/")
    expect(page.locator(f"#size-{folder.id}")).to_have_text("unknown")
    expect(page.locator("#scope-usage")).to_contain_text("Storage: unknown")
    expect(page.locator("body")).not_to_contain_text("Log in")
    audit(page, "folders-list-sizes-unknown")
