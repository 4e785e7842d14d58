"""``vfolder clone`` (``POST /folders/{x}/clone``): a new user folder with a copy of
another folder's files, filled by a background task.

``start_clone`` checks everything first and creates nothing on a refusal: the
caller must be able to read the source, the source must be ``cloneable`` and
ready, the target name and host must be acceptable (the same rules as creating
a folder: host permission ``create-vfolder``, the policy's folder count, a unique
name), and the source's bytes must fit the caller's quota scope on the target
host.  Then, in one transaction, the source moves to CLONING (so nothing writes
to it or clones it again meanwhile) and the target is created in CLONING.

``run_clone`` (what the background task runs) asks the storage proxy to copy the
files (``POST /folder/clone``: the proxy copies into a staging directory, enforces the
target scope's limit and publishes the copy with one rename, leaving nothing behind on
a failure), then moves both folders back to READY.  On any failure the target moves to
ERROR (its owner deletes it) and the source to READY; the error is raised again for the
task to report.  ``reconcile_clones``
does the same for clones whose worker died (CLONING longer than
``VFOLDER_CLONE_TIMEOUT`` seconds).  Every status change goes through
``vfolders.services.status.move_status``."""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from backendai import bgtasks
from backendai.actions import audited
from backendai.api import errors
from vfolders.models import UsageMode, VFolder, VFolderPermission, VFolderStatus
from vfolders.services import proxy
from vfolders.services.access import folders, get_folder, require_usable
from vfolders.services.hosts import pick_host
from vfolders.services.inputs import PERMISSIONS, USAGE_MODES, choice, validate_folder_name
from vfolders.services.lifecycle import create_folder
from vfolders.services.quota import measure_scope, push_limit, scope_bytes, scope_limit_for
from vfolders.services.status import move_status

log = logging.getLogger(__name__)

#: What ``run_clone`` reports through: (bytes copied, files copied, bytes in all).
Progress = Callable[[int, int, int], None]
TASK_NAME = "vfolder_clone"
TASK_PATH = "vfolders.services.cloning.clone_task"


def clone_timeout() -> int:
    """Seconds a clone may stay CLONING before the reconciler gives it up."""
    return int(settings.VFOLDER_CLONE_TIMEOUT)


def _check_room(user: User, host, size: int) -> None:
    qsid = f"user:{user.pk}"
    limit = scope_limit_for(qsid, host)
    if limit < 0:
        return
    used = scope_bytes(host, qsid)
    if used + size > limit:
        raise errors.QuotaExceeded(
            f"The copy needs {size} bytes; the quota scope {qsid} holds {used} of {limit} bytes on {host.name}",
            data={"limit": limit, "used": used, "requested": size})


@audited("vfolder", "clone", "ref")
def start_clone(user: User, ref, *, target_name, target_host=None, usage_mode=UsageMode.GENERAL,
                permission=VFolderPermission.READ_WRITE, cloneable=False,
                keypair=None) -> tuple[VFolder, VFolder, str]:
    """Check a clone of ``ref``, create its target (CLONING) and queue the copy as a
    background task; returns (target, source, task id).  Raises before anything is
    created when the clone is refused."""
    access = get_folder(user, ref, need="read")
    source = access.folder
    if not source.cloneable:
        raise errors.GenericForbidden(
            f"The folder {source.name!r} may not be cloned; its owner can allow it (update-options --set-cloneable)")
    if source.status != VFolderStatus.READY:
        raise errors.VFolderOperationFailed(
            f"The folder {source.name!r} is {source.status}; only a ready folder can be cloned")
    require_usable(source)
    target_name = validate_folder_name(target_name, "target_name")
    choice(usage_mode, USAGE_MODES, "usage_mode")
    choice(permission, PERMISSIONS, "permission")
    host = pick_host(target_host, user, keypair)
    size = _used_bytes(source)
    _check_room(user, host, size)
    target = None
    try:
        with transaction.atomic():
            if not move_status(source, VFolderStatus.CLONING, expected=[VFolderStatus.READY]):
                raise errors.VFolderOperationFailed(f"The folder {source.name!r} changed meanwhile; try again")
            target = create_folder(user, name=target_name, host=host.name, usage_mode=usage_mode,
                                   permission=permission, cloneable=bool(cloneable), keypair=keypair,
                                   status=VFolderStatus.CLONING)
            # queued when this transaction commits: a rollback runs nothing
            task_id = bgtasks.start(TASK_NAME, TASK_PATH, str(target.pk), str(source.pk), owner=user.pk)
    except BaseException:
        if target is not None:  # its row is rolled back; its (empty) directory must go too
            try:
                proxy.folder_call(target, "POST", "/folder/delete")
            except errors.BackendAIError as exc:
                log.error("cannot remove the directory of the clone %s that was not made: %s", target.pk,
                          exc.msg or exc.error_title)
        raise
    log.info("clone of folder %s (%s) into %s (%s) on %s started by %s (task %s)", source.pk, source.name,
             target.pk, target.name, host.name, user.pk, task_id)
    return target, source, task_id


def clone_json(target: VFolder, task_id) -> dict:
    """The answer to ``POST /folders/{x}/clone`` (201), as the client reads it."""
    return {
        "id": target.id.hex,
        "name": target.name,
        "host": target.host_id,
        "usage_mode": target.usage_mode,
        "permission": target.permission,
        "creator": target.creator,
        "ownership_type": target.ownership_type,
        "user": str(target.user_id) if target.user_id else None,
        "group": str(target.project_id) if target.project_id else None,
        "cloneable": target.cloneable,
        "status": target.status,
        "bgtask_id": str(task_id) if task_id is not None else None,
    }


def _used_bytes(folder: VFolder) -> int:
    answer = proxy.folder_call(folder, "GET", "/folder/usage")
    try:
        return int(answer.get("used_bytes") or 0)
    except (TypeError, ValueError):
        raise proxy.unavailable(folder.host.proxy_name, "it reported a usage that is not a number") from None


def _fail(target: VFolder, source: VFolder) -> None:
    """Undo a clone that will not finish (the proxy left no partial copy): target ERROR, source READY."""
    with transaction.atomic():
        move_status(target, VFolderStatus.ERROR, expected=[VFolderStatus.CLONING])
        move_status(source, VFolderStatus.READY, expected=[VFolderStatus.CLONING])


def run_clone(target_id, source_id, progress: Progress | None = None) -> dict:
    """Copy the source's files into the target (the background task's body); returns
    ``{"bytes", "files"}``.  Does nothing when the target is no longer CLONING."""
    target = folders().get(pk=target_id)
    source = folders().get(pk=source_id)
    if target.status != VFolderStatus.CLONING:
        log.info("clone into folder %s: it is %s, nothing to do", target.pk, target.status)
        return {"bytes": 0, "files": 0}
    try:
        total = _used_bytes(source)
        if progress is not None:
            progress(0, 0, total)
        push_limit(target.host, target.quota_scope_id, create=True)  # the proxy enforces it while copying
        answer = proxy.call(proxy.get_proxy(target.host.proxy_name), "POST", "/folder/clone",
                            {"src_volume": source.host.volume_name, "src_vfid": source.vfid,
                             "dst_volume": target.host.volume_name, "dst_vfid": target.vfid}, long=True)
        copied = int(answer.get("bytes") or answer.get("used_bytes") or total)
        files = int(answer.get("files") or answer.get("file_count") or 0)
        if progress is not None:
            progress(copied, files, total)
    except errors.BackendAIError as exc:
        log.error("clone of folder %s into %s failed: %s", source.pk, target.pk, exc.msg or exc.error_title)
        _fail(target, source)
        raise
    except BaseException:
        _fail(target, source)
        raise
    with transaction.atomic():
        move_status(target, VFolderStatus.READY, expected=[VFolderStatus.CLONING])
        move_status(source, VFolderStatus.READY, expected=[VFolderStatus.CLONING])
    try:
        measure_scope(target.host, target.quota_scope_id)
    except errors.BackendAIError:
        pass
    log.info("cloned folder %s into %s: %d bytes, %d files", source.pk, target.pk, copied, files)
    return {"bytes": copied, "files": files}


@bgtasks.background
def clone_task(progress: bgtasks.Progress, target_id: str, source_id: str) -> str:
    """The background task of a clone: ``run_clone`` reporting bytes through ``progress``."""
    def report(copied: int, files: int, total: int) -> None:
        progress.update(copied, total=total, message=f"{files} file(s), {copied} of {total} bytes copied")

    result = run_clone(target_id, source_id, report)
    return f"Cloned {result['files']} file(s), {result['bytes']} bytes"


def reconcile_clones(timeout: int | None = None) -> int:
    """Give up clones that will not finish: those whose background task ended without copying
    (cancelled before a worker took it, or failed as unclaimed or stalled by the task
    reconciler) at once, and any still CLONING after ``timeout`` seconds (a worker that died
    mid-copy).  Targets go to ERROR, sources back to READY (a partial copy is the proxy's to
    sweep: it publishes a copy only whole)."""
    cutoff = timezone.now() - timedelta(seconds=clone_timeout() if timeout is None else timeout)
    cloning = folders().filter(status=VFolderStatus.CLONING)
    stuck = list(cloning.filter(status_changed__lt=cutoff))
    # target -> source of the clones whose task ended unsuccessfully; while its target is CLONING a
    # source is CLONING for that clone only (a source is cloned from READY), so both are given up
    ended = {str(args[0]): str(args[1]) for args in bgtasks.ended_unsuccessfully(TASK_PATH) if len(args) >= 2}
    if ended:
        young = {str(folder.pk): folder for folder in cloning.filter(status_changed__gte=cutoff)}
        stuck += [young[target] for target in ended if target in young]
        stuck += [young[ended[target]] for target in ended if target in young and ended[target] in young]
    given_up = 0
    for folder in stuck:
        # a target was created CLONING (one history entry) and goes to ERROR; a source goes back to READY
        is_target = len(folder.status_history or []) <= 1
        if move_status(folder, VFolderStatus.ERROR if is_target else VFolderStatus.READY,
                       expected=[VFolderStatus.CLONING]):
            given_up += 1
            log.warning("folder %s was CLONING since %s; moved to %s", folder.pk, folder.status_changed, folder.status)
    return given_up
