"""The folder status door: the transition map in ``vfolders.models`` says which
moves are legal, ``vfolders.services.status.move_status`` is the only writer, and
every service that changes a folder's status (trash, restore, purge, the
reconciler) goes through it, so an illegal move is refused whoever asks."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backendai.api import errors
from vfolders import services
from vfolders.models import (
    ALIVE_STATUSES,
    FOLDER_TRANSITIONS,
    LISTED_STATUSES,
    TRASH_STATUSES,
    VFolder,
    VFolderStatus,
    folder_can_move,
)
from vfolders.services.status import IllegalFolderMove, move_status

pytestmark = pytest.mark.django_db

LEGAL = [(src, dst) for src, targets in FOLDER_TRANSITIONS.items() for dst in sorted(targets)]
ILLEGAL = [(src, dst) for src in VFolderStatus for dst in VFolderStatus if dst not in FOLDER_TRANSITIONS[src]]
NOT_ALIVE = [s for s in VFolderStatus if s not in ALIVE_STATUSES]
NOT_TRASH = [s for s in VFolderStatus if s not in TRASH_STATUSES]


def _in_status(folder: VFolder, status: str) -> VFolder:
    """The folder as if it had reached ``status`` (test setup writes the row directly)."""
    VFolder.objects.filter(pk=folder.pk).update(status=status)
    folder.refresh_from_db()
    return folder


def _row(folder: VFolder) -> tuple:
    return VFolder.objects.filter(pk=folder.pk).values_list("status", "status_history").get()


def test_the_map_names_every_status_and_only_known_ones():
    assert set(FOLDER_TRANSITIONS) == set(VFolderStatus)
    assert all(targets <= set(VFolderStatus) for targets in FOLDER_TRANSITIONS.values())


def test_the_status_sets_the_services_use_are_the_ones_the_models_define():
    assert services.ALIVE_STATUSES is ALIVE_STATUSES
    assert services.TRASH_STATUSES is TRASH_STATUSES
    assert services.LISTED_STATUSES is LISTED_STATUSES


def test_the_map_allows_what_the_trash_needs_and_nothing_leaves_delete_complete():
    assert all(folder_can_move(s, VFolderStatus.DELETE_PENDING) for s in ALIVE_STATUSES)
    assert all(folder_can_move(s, VFolderStatus.READY) for s in TRASH_STATUSES)
    assert all(folder_can_move(s, VFolderStatus.DELETE_ONGOING) for s in TRASH_STATUSES)
    assert FOLDER_TRANSITIONS[VFolderStatus.DELETE_COMPLETE] == frozenset()


def test_a_new_folder_starts_ready_with_one_history_entry(owner, make_folder):
    folder = make_folder(owner, "fresh")
    status, history = _row(folder)
    assert status == VFolderStatus.READY
    assert [h["status"] for h in history] == ["ready"]


@pytest.mark.parametrize(("src", "dst"), LEGAL, ids=[f"{s}->{d}" for s, d in LEGAL])
def test_every_legal_move_works_through_the_door(owner, make_folder, src, dst):
    folder = _in_status(make_folder(owner, "f"), src)
    before = len(folder.status_history)
    assert move_status(folder, dst) is True
    status, history = _row(folder)
    assert status == dst and folder.status == dst
    assert len(history) == before + 1 and history[-1]["status"] == dst


@pytest.mark.parametrize(("src", "dst"), ILLEGAL, ids=[f"{s}->{d}" for s, d in ILLEGAL])
def test_every_illegal_move_is_refused_by_the_door(owner, make_folder, src, dst):
    folder = _in_status(make_folder(owner, "f"), src)
    before = _row(folder)
    with pytest.raises(IllegalFolderMove):
        move_status(folder, dst)
    with pytest.raises(IllegalFolderMove):
        move_status(folder, dst, expected=[src])
    assert _row(folder) == before


def test_the_door_refuses_when_any_expected_status_may_not_make_the_move(owner, make_folder):
    folder = make_folder(owner, "f")
    with pytest.raises(IllegalFolderMove):
        move_status(folder, VFolderStatus.DELETE_COMPLETE, expected=[VFolderStatus.DELETE_ONGOING,
                                                                     VFolderStatus.READY])
    assert _row(folder)[0] == VFolderStatus.READY


def test_a_folder_that_moved_meanwhile_is_left_alone(owner, make_folder):
    folder = make_folder(owner, "f")
    stale = VFolder.objects.get(pk=folder.pk)
    assert move_status(folder, VFolderStatus.DELETE_PENDING, expected=ALIVE_STATUSES)
    assert move_status(stale, VFolderStatus.DELETE_PENDING, expected=ALIVE_STATUSES) is False
    status, history = _row(folder)
    assert status == VFolderStatus.DELETE_PENDING
    assert [h["status"] for h in history] == ["ready", "delete-pending"]


# --- each writer ------------------------------------------------------------------------------

@pytest.mark.parametrize("src", ALIVE_STATUSES)
def test_trash_moves_every_alive_folder(owner, make_folder, src):
    folder = _in_status(make_folder(owner, "f"), src)
    services.move_to_trash(owner, folder.id.hex)
    assert _row(folder)[0] == VFolderStatus.DELETE_PENDING


@pytest.mark.parametrize("src", NOT_ALIVE)
def test_trash_refuses_a_folder_that_is_not_alive(owner, make_folder, src):
    folder = _in_status(make_folder(owner, "f"), src)
    before = _row(folder)
    with pytest.raises(errors.ObjectNotFound):
        services.move_to_trash(owner, folder.id.hex)
    assert _row(folder) == before


@pytest.mark.parametrize("src", TRASH_STATUSES)
def test_restore_brings_back_every_folder_in_the_trash(owner, make_folder, src):
    folder = _in_status(make_folder(owner, "f"), src)
    services.restore_from_trash(owner, folder.id.hex)
    assert _row(folder)[0] == VFolderStatus.READY


@pytest.mark.parametrize("src", NOT_TRASH)
def test_restore_refuses_a_folder_that_is_not_in_the_trash(owner, make_folder, src):
    folder = _in_status(make_folder(owner, "f"), src)
    before = _row(folder)
    with pytest.raises(errors.ObjectNotFound):
        services.restore_from_trash(owner, folder.id.hex)
    assert _row(folder) == before


@pytest.mark.parametrize("src", TRASH_STATUSES)
def test_purge_deletes_every_folder_in_the_trash(owner, make_folder, src):
    folder = _in_status(make_folder(owner, "f"), src)
    services.purge(owner, folder.id.hex)
    status, history = _row(folder)
    assert status == VFolderStatus.DELETE_COMPLETE
    assert [h["status"] for h in history][-2:] == ["delete-ongoing", "delete-complete"]
    assert not folder.path.exists()


@pytest.mark.parametrize("src", NOT_TRASH)
def test_purge_refuses_a_folder_that_is_not_in_the_trash(owner, make_folder, src):
    folder = _in_status(make_folder(owner, "f"), src)
    before = _row(folder)
    with pytest.raises(errors.ObjectNotFound):
        services.purge(owner, folder.id.hex)
    assert _row(folder) == before and folder.path.exists()


@pytest.mark.parametrize("src", [s for s in VFolderStatus if s != VFolderStatus.DELETE_ONGOING])
def test_the_reconciler_finishes_only_deletions_that_are_under_way(owner, make_folder, src):
    folder = _in_status(make_folder(owner, "f"), src)
    VFolder.objects.filter(pk=folder.pk).update(status_changed=timezone.now() - timedelta(hours=1))
    before = _row(folder)
    assert services.reconcile(stuck_after_seconds=60)["deletions_retried"] == 0
    assert _row(folder) == before and folder.path.exists()


def test_the_reconciler_completes_a_stuck_deletion_through_the_door(owner, make_folder):
    folder = _in_status(make_folder(owner, "f"), VFolderStatus.DELETE_ONGOING)
    VFolder.objects.filter(pk=folder.pk).update(status_changed=timezone.now() - timedelta(hours=1))
    assert services.reconcile(stuck_after_seconds=60)["deletions_retried"] == 1
    status, history = _row(folder)
    assert status == VFolderStatus.DELETE_COMPLETE and history[-1]["status"] == "delete-complete"
