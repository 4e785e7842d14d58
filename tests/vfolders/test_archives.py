"""Directory downloads (zip and tar) can't escape: whatever a session left in
the folder (symbolic links out of it, names with backslashes, drive letters,
``..`` spelled with backslashes, newlines, bytes that are not UTF-8), every
entry is a relative path without ``..``, backslashes, ``:`` or control
characters under one top directory, and nothing outside the folder gets in."""
import io
import os
import tarfile
import unicodedata
import zipfile

import pytest

pytestmark = pytest.mark.django_db

HOSTILE = ["a\\..\\..\\x", "C:evil", "line\nbreak", "tab\tname", "..\\up", "trail.", "CON", "nul.txt",
           "x\u202egpj.exe", "ads:stream", " lead"]


@pytest.fixture
def planted(owner, make_folder, tmp_path):
    """A folder where a session created hostile names and links straight on disk."""
    folder = make_folder(owner, "loot")
    root = folder.path
    (root / "ok.txt").write_bytes(b"ok")
    for i, name in enumerate(HOSTILE):
        (root / name).write_bytes(f"hostile {i}".encode())
    (root / "dir\\..\\..").mkdir()
    (root / "dir\\..\\.." / "inner.txt").write_bytes(b"inner")
    os.mkdir(os.fsencode(root) + b"/bad-\xff-bytes")
    with open(os.fsencode(root) + b"/bad-\xff-bytes/f\xfe.txt", "wb") as fh:
        fh.write(b"raw bytes")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"TOP-SECRET-OUTSIDE")
    os.symlink("/etc", root / "etc-link")
    os.symlink("/etc/passwd", root / "passwd-link")
    os.symlink(outside, root / "out-dir")
    os.symlink(outside / "secret.txt", root / "out-file")
    os.symlink("ok.txt", root / "inside-link")
    # the colliding pair: "a:b" is renamed to "a_b", which exists too
    (root / "a:b").write_bytes(b"colon")
    (root / "a_b").write_bytes(b"underscore")
    return folder


def zip_entries(t, ref, path="."):
    resp = t.client.get(t.request_download(ref, path, format="zip"))
    assert resp.status_code == 200, resp.content
    archive = zipfile.ZipFile(io.BytesIO(t.body(resp)))
    return {info.filename: (b"" if info.is_dir() else archive.read(info)) for info in archive.infolist()}


def tar_entries(t, ref, path="."):
    resp = t.client.get(t.request_download(ref, path, format="tar"))
    assert resp.status_code == 200, resp.content
    body = t.body(resp)
    assert int(resp["Content-Length"]) == len(body)
    result = {}
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        for member in archive.getmembers():
            assert member.isdir() or member.isfile(), member.name  # no links, no devices
            result[member.name] = archive.extractfile(member).read() if member.isfile() else b""
    return result


def assert_safe(names):
    for name in names:
        parts = name.rstrip("/").split("/")
        assert parts[0] == "loot", name
        assert not name.startswith("/") and "\\" not in name and ":" not in name, name
        assert ".." not in parts and "." not in parts and "" not in parts, name
        assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in name), name
        assert all(p == p.strip() and not p.endswith(".") for p in parts), name


@pytest.mark.parametrize("read", [zip_entries, tar_entries], ids=["zip", "tar"])
def test_archive_entries_are_safe_whatever_names_are_on_disk(owner, planted, transfers, read):
    entries = read(transfers(owner), "loot")
    assert_safe(entries)
    assert entries["loot/ok.txt"] == b"ok"
    # hostile names are kept, under sanitised names, with their contents
    contents = sorted(v for v in entries.values() if v.startswith(b"hostile"))
    assert contents == sorted(f"hostile {i}".encode() for i in range(len(HOSTILE)))
    assert entries["loot/a_.._.._x"] == b"hostile 0"
    assert entries["loot/C_evil"] == b"hostile 1"
    assert entries["loot/line_break"] == b"hostile 2"
    assert entries["loot/_CON"] == b"hostile 6"
    assert entries["loot/dir_.._/inner.txt"] == b"inner"
    assert entries["loot/bad-_-bytes/f_.txt"] == b"raw bytes"
    # two names that sanitise alike stay two entries
    assert sorted([entries["loot/a_b"], entries["loot/a_b~2"]]) == [b"colon", b"underscore"]


@pytest.mark.parametrize("read", [zip_entries, tar_entries], ids=["zip", "tar"])
def test_symbolic_links_are_left_out_of_archives(owner, planted, transfers, read):
    entries = read(transfers(owner), "loot")
    assert not any(n.split("/")[1].endswith(("-link", "out-dir", "out-file")) for n in entries if "/" in n)
    blob = b"".join(entries.values())
    assert b"TOP-SECRET-OUTSIDE" not in blob
    assert b"root:" not in blob  # /etc/passwd


def proxy_log_since(handle, offset: int) -> str:
    """What the storage proxy logged (its stderr goes to ``handle.log_path``) after ``offset`` bytes."""
    with open(handle.log_path, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")


def test_renamed_entries_are_logged_by_the_storage_proxy(owner, planted, transfers, storage_proxy):
    start = os.path.getsize(storage_proxy.log_path)
    zip_entries(transfers(owner), "loot")
    text = proxy_log_since(storage_proxy, start)
    assert "renamed to safe names" in text and "'C:evil' -> 'loot/C_evil'" in text


def test_a_clean_folder_archives_unchanged(owner, make_folder, transfers, storage_proxy):
    folder = make_folder(owner, "loot")
    (folder.path / "d").mkdir()
    (folder.path / "d" / "f.txt").write_bytes(b"f")
    start = os.path.getsize(storage_proxy.log_path)
    assert zip_entries(transfers(owner), "loot") == {"loot/": b"", "loot/d/": b"", "loot/d/f.txt": b"f"}
    assert "renamed to safe names" not in proxy_log_since(storage_proxy, start)


def test_the_archive_names_unit_maps_every_component_once():
    from storageproxy.names import ArchiveNames

    names = ArchiveNames("top:dir")
    assert names.top == "top_dir"
    assert names.entry(("..",)) == "top_dir/_"
    assert names.entry(("a\\b",)) == "top_dir/a_b"
    assert names.entry(("a_b",)) == "top_dir/a_b~2"
    assert names.entry(("a\\b", "x\r")) == "top_dir/a_b/x_"
    assert names.entry(("report.tar.gz",)) == "top_dir/report.tar.gz"
    assert names.entry(("report:tar.gz",)) == "top_dir/report_tar.gz"
    assert names.entry(("report_tar.gz",)) == "top_dir/report_tar~2.gz"
    assert ("a_b", "top_dir/a_b~2") in names.renamed and ("a\\b/x\r", "top_dir/a_b/x_") in names.renamed
