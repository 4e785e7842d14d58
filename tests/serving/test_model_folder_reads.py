"""``vfolders.services.read_file``: the manager reads a small file of a folder through its storage
proxy (the model definition), streamed and capped."""
import pytest

from backendai.api import errors
from vfolders import services as vfolder_services


def test_it_reads_a_file_through_the_storage_proxy(owner, make_model, write_file):
    folder = make_model(owner, name="m1", definition="hello: world\n")
    write_file(owner, folder, "sub/dir/file.txt", b"\x00\x01data")
    assert vfolder_services.read_file(folder, "model-definition.yaml", 1024) == b"hello: world\n"
    assert vfolder_services.read_file(folder, "sub/dir/file.txt", 1024) == b"\x00\x01data"


def test_a_missing_file_is_not_found_and_a_directory_is_refused(owner, make_model, write_file):
    folder = make_model(owner, name="m2", definition=None)
    write_file(owner, folder, "sub/x.txt", "x")
    with pytest.raises(errors.ObjectNotFound):
        vfolder_services.read_file(folder, "nope.yaml", 1024)
    with pytest.raises(errors.VFolderOperationFailed, match="is not a file"):
        vfolder_services.read_file(folder, "sub", 1024)


def test_a_file_over_the_cap_is_refused(owner, make_model):
    folder = make_model(owner, name="m3", definition="x" * 2000)
    with pytest.raises(errors.PayloadTooLarge):
        vfolder_services.read_file(folder, "model-definition.yaml", 1999)
    assert len(vfolder_services.read_file(folder, "model-definition.yaml", 2000)) == 2000


@pytest.mark.parametrize("path", ["../escape", "/", ""])
def test_paths_outside_the_folder_are_refused(owner, make_model, path):
    folder = make_model(owner, name="m4")
    with pytest.raises(errors.BackendAIError) as caught:
        vfolder_services.read_file(folder, path, 1024)
    assert 400 <= caught.value.status_code < 500
