"""Folders in a real browser (Debian's Chromium through Playwright) against a
live server: create a folder, upload a file with the resumable uploader, see it
listed, download it byte-identical; an upload whose connection drops resumes."""
from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("storage_host")]

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture reports it through require()
    expect = None


def create_folder(page, name):
    page.goto("/ui/folders/")
    page.fill("#id_name", name)
    page.click("#create-folder-button")
    expect(page.locator("#breadcrumbs")).to_contain_text(name)


def test_create_upload_see_and_download_a_file(make_user, login, page, tmp_path, storage_proxy):
    from vfolders.models import VFolder

    sent = []  # every request carrying file bytes: to the storage proxy, none to the manager
    page.on("request", lambda request: sent.append(request.url) if request.method in ("PATCH", "PUT") else None)

    user = make_user("browser-folders@example.com")
    login(user)
    create_folder(page, "holiday")
    folder = VFolder.objects.get(name="holiday")

    payload = os.urandom(5 * 2**20 + 333)  # two chunks of the page's 4 MiB
    source = tmp_path / "photo.bin"
    source.write_bytes(payload)
    page.set_input_files("#upload-files", str(source))
    page.click("#upload-button")
    row = page.locator('#file-table tr[data-name="photo.bin"]')
    expect(row).to_be_visible(timeout=30_000)
    assert (folder.path / "photo.bin").read_bytes() == payload
    assert sent and all(url.startswith(storage_proxy.client_url + "/upload?token=") for url in sent)

    page.goto("/ui/folders/")
    expect(page.locator('#my-folders tr[data-folder="holiday"]')).to_be_visible()
    page.click('#my-folders tr[data-folder="holiday"] a')
    with page.expect_download() as info:
        page.locator('#file-table tr[data-name="photo.bin"] a.vf-download').click()
    saved = tmp_path / "downloaded.bin"
    info.value.save_as(saved)
    assert saved.read_bytes() == payload


def test_an_upload_survives_a_dropped_connection(make_user, login, page, tmp_path, storage_proxy):
    from vfolders.models import VFolder

    user = make_user("browser-resume@example.com")
    login(user)
    create_folder(page, "resume")
    folder = VFolder.objects.get(name="resume")
    payload = os.urandom(9 * 2**20 + 77)
    source = tmp_path / "big.bin"
    source.write_bytes(payload)

    seen = {"patches": 0, "dropped": 0, "heads": 0}

    def flaky(route, request):
        if request.method == "HEAD":
            seen["heads"] += 1
        if request.method == "PATCH":
            seen["patches"] += 1
            if seen["patches"] == 2 and not seen["dropped"]:
                seen["dropped"] += 1
                route.abort("connectionreset")
                return
        route.continue_()

    page.route(storage_proxy.client_url + "/upload?**", flaky)
    page.set_input_files("#upload-files", str(source))
    page.click("#upload-button")
    expect(page.locator("#upload-progress")).to_contain_text("Connection lost", timeout=15_000)
    expect(page.locator('#file-table tr[data-name="big.bin"]')).to_be_visible(timeout=60_000)
    assert seen["dropped"] == 1 and seen["heads"] >= 1
    assert (folder.path / "big.bin").read_bytes() == payload
