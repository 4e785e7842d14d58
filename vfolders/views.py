"""Web UI for folders (mounted under /ui/ with the ``ui-vfolders`` namespace).

Server-rendered and usable without JavaScript: every action is a form POST that
redirects back.  ``static/vfolders/upload.js`` upgrades the upload form to
resumable tus uploads with a progress bar per file, a drop zone and the name-conflict prompt
(overwrite / keep both / skip); ``static/vfolders/browse.js`` adds "select all" to the file table.
An action's error is shown beside the action (``_fail``).  Thin views over ``vfolders.services``.
"""
from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from backendai.api.errors import BackendAIError
from storageproxy import paths
from vfolders import services
from vfolders.forms import CreateFolderForm, InviteForm
from vfolders.models import OwnershipType


def _error_text(exc: BackendAIError) -> str:
    return exc.msg or exc.error_title


def _browse_url(folder_id, path: str | None = None) -> str:
    url = reverse("ui-vfolders:browse", args=[folder_id])
    if path and path != ".":
        url += "?" + urlencode({"path": path})
    return url


#: Marks a fragment response (static/vfolders/sizes.js swaps nothing else in, e.g. a login page).
FRAGMENT_HEADER = "X-Live-Fragment"
#: Where each action's error shows on the folder page (``in-card`` keeps it out of the page-wide list).
ERROR_SPOTS = {"files": "in-card vf-err-files", "mkdir": "in-card vf-err-mkdir", "upload": "in-card vf-err-upload",
               "share": "in-card vf-err-share", "folder": "in-card vf-err-folder"}


def _fail(request, spot: str, text: str) -> None:
    """An action's error, shown beside the action (``spot``) on the folder page."""
    messages.error(request, text, extra_tags=ERROR_SPOTS[spot])


def _back(request, folder_id):
    return redirect(_browse_url(folder_id, request.POST.get("path") or request.GET.get("path")))


def _create_form(request, data=None):
    user = request.user
    hosts = [h.name for h in services.allowed_hosts(user, user.main_keypair)]
    default = services.default_host_name()
    return CreateFolderForm(data, hosts=hosts, default_host=default if default in hosts else None,
                            projects=services.creatable_projects(user))


@login_required
def folder_list(request):
    user = request.user
    form = _create_form(request)
    if request.method == "POST":
        form = _create_form(request, request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                folder = services.create_folder(
                    user, name=data["name"], host=data["host"], group=data.get("project") or None,
                    usage_mode=data["usage_mode"], permission=data["permission"], cloneable=data["cloneable"],
                    keypair=user.main_keypair)
            except BackendAIError as exc:
                form.add_error("name" if exc.error_type in ("vfolder-already-exists", "invalid-api-params")
                               else None, _error_text(exc))
            else:
                messages.success(request, f"Created the folder {folder.name}.")
                return redirect("ui-vfolders:browse", folder.pk)
    sections = {"mine": [], "project": [], "shared": [], "trash": []}
    for access in services.list_folders(user):
        folder = access.folder
        if folder.status in services.TRASH_STATUSES:
            if access.can_manage:
                sections["trash"].append(access)
        elif folder.ownership_type == OwnershipType.GROUP:
            sections["project"].append({"a": access})
        elif access.is_owner:
            sections["mine"].append({"a": access})
        else:
            sections["shared"].append({"a": access})
    context = {"form": form, "sections": sections, "folder_count": services.folder_count(user),
               "pending_invitations": len(services.invitations_received(user))}
    return render(request, "vfolders/folder_list.html", context, status=400 if form.errors else 200)


@login_required
@require_GET
def folder_sizes(request):
    """The fragment the folder list loads after it shows (htmx, ``hx-trigger="load"``): the quota
    scopes' gauges, and each listed folder's size cell swapped in by id (``hx-swap-oob``).  It
    measures the requester's own list only (``list_folders``), so nobody learns another's sizes."""
    user = request.user
    accesses = services.list_folders(user)
    overview = services.usage_overview(user, accesses)
    cells = [{"a": a, "size": overview.sizes.get(a.folder.id), "limit": overview.limit_of(a.folder)}
             for a in accesses if a.folder.status not in services.TRASH_STATUSES]
    response = render(request, "vfolders/_sizes.html", {"scopes": overview.scopes, "cells": cells})
    response[FRAGMENT_HEADER] = "1"
    return response


@login_required
def browse(request, folder_id):
    user = request.user
    path = request.GET.get("path") or "."
    try:
        access = services.get_folder(user, folder_id.hex)
        listing = services.list_files(user, folder_id.hex, path)
    except BackendAIError as exc:
        messages.error(request, _error_text(exc))
        if path != ".":
            return redirect(_browse_url(folder_id))
        return redirect("ui-vfolders:folders")
    folder = access.folder
    parts = paths.clean_relpath(listing["path"])
    crumbs = [{"name": folder.name, "url": _browse_url(folder.pk)}]
    for i in range(len(parts)):
        crumbs.append({"name": parts[i], "url": _browse_url(folder.pk, "/".join(parts[: i + 1]))})
    entries = []
    for item in listing["items"]:
        rel = "/".join(parts + (item["name"],))
        entries.append({**item, "path": rel, "modified_at": datetime.fromisoformat(item["modified"]),
                        "url": _browse_url(folder.pk, rel) if item["type"] == "directory" else None})
    context = {
        "access": access, "folder": folder, "path": paths.display_path(parts), "crumbs": crumbs,
        "parent_url": _browse_url(folder.pk, "/".join(parts[:-1])) if parts else None,
        "entries": entries, "invite_form": InviteForm(auto_id="invite-%s"),
        "grants": services.folder_grants(folder) if access.can_manage else [],
        "members": services.project_member_emails(folder) if access.can_manage else [],
        "size": services.folder_size(folder), "limit": _scope_limit(folder),
        "upload_chunk": 4 * 2**20,
    }
    response = render(request, "vfolders/browse.html", context)
    origin = services.client_origin(folder.host)
    if origin:  # the upload script sends the bytes to the storage proxy's client API directly
        response._csp_update = {"connect-src": [origin]}
    return response


def _scope_limit(folder) -> int | None:
    limit = services.scope_limit(folder)
    return limit if limit >= 0 else None


def _run(request, folder_id, action, success: str | None = None, spot: str = "files"):
    """Run a service call for a form POST, report the outcome (an error beside the action
    ``spot``), go back to the folder."""
    try:
        result = action()
    except BackendAIError as exc:
        _fail(request, spot, _error_text(exc))
    else:
        if success:
            messages.success(request, success.format(result=result))
    return _back(request, folder_id)


@login_required
@require_POST
def mkdir(request, folder_id):
    name = request.POST.get("name", "")
    base = request.POST.get("path") or "."
    target = name if base == "." else f"{base}/{name}"

    def action():
        services.check_new_name(name, "name")  # one component: the form asks for a name, not a path
        return services.make_dirs(request.user, folder_id.hex, target)

    return _run(request, folder_id, action, f"Created the directory {name}.", spot="mkdir")


@login_required
@require_POST
def upload(request, folder_id):
    """The upload form without JavaScript: multipart files, each staged and moved into place."""
    files = request.FILES.getlist("files")
    if not files:
        _fail(request, "upload", "Choose at least one file to upload.")
        return _back(request, folder_id)
    done = []
    for item in files:
        try:
            services.upload_file_object(request.user, folder_id.hex, request.POST.get("path") or ".", item.name,
                                        item, item.size, keypair=request.user.main_keypair)
        except BackendAIError as exc:
            _fail(request, "upload", f"{item.name}: {_error_text(exc)}")
        else:
            done.append(item.name)
    if done:
        messages.success(request, f"Uploaded {', '.join(done)}.")
    return _back(request, folder_id)


@login_required
@require_POST
def request_upload(request, folder_id):
    """JSON for the upload script: ``{token, url, expires_in}`` (session-authenticated)."""
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return JsonResponse({"msg": "The request body must be JSON"}, status=400)
    if not isinstance(data, dict):
        return JsonResponse({"msg": "The request body must be a JSON object"}, status=400)
    size = data.get("size")
    try:
        result = services.request_upload(request.user, folder_id.hex, data.get("path"), size,
                                         keypair=request.user.main_keypair)
    except BackendAIError as exc:
        return JsonResponse({"msg": _error_text(exc), "type": exc.error_type}, status=exc.status_code)
    result["expires_in"] = services.token_lifetime()
    return JsonResponse(result)


@login_required
@require_GET
def download(request, folder_id):
    archive_format = request.GET.get("format") or None
    try:
        result = services.request_download(request.user, folder_id.hex, request.GET.get("path") or ".",
                                           keypair=request.user.main_keypair, archive_format=archive_format)
    except BackendAIError as exc:
        messages.error(request, _error_text(exc))
        return redirect(_browse_url(folder_id))
    separator = "&" if "?" in result["url"] else "?"
    query = {"token": result["token"]}  # the archive format travels in the token
    return HttpResponseRedirect(result["url"] + separator + urlencode(query))


@login_required
@require_POST
def rename_file(request, folder_id):
    target, new_name = request.POST.get("target", ""), request.POST.get("new_name", "")
    return _run(request, folder_id, lambda: services.rename_file(request.user, folder_id.hex, target, new_name),
                f"Renamed to {new_name}.")


@login_required
@require_POST
def move_file(request, folder_id):
    src, dst = request.POST.get("src", ""), request.POST.get("dst", "")
    return _run(request, folder_id, lambda: services.move_file(request.user, folder_id.hex, src, dst),
                "Moved to {result}.")


@login_required
@require_POST
def delete_files(request, folder_id):
    files = request.POST.getlist("files")
    if not files:
        _fail(request, "files", "Select the files to delete: tick their boxes first.")
        return _back(request, folder_id)
    return _run(request, folder_id, lambda: services.delete_files(request.user, folder_id.hex, files, recursive=True),
                f"Deleted {len(files)} item(s).")


@login_required
@require_POST
def rename_folder(request, folder_id):
    new_name = request.POST.get("new_name", "")
    return _run(request, folder_id, lambda: services.rename_folder(request.user, folder_id.hex, new_name,
                                                                   keypair=request.user.main_keypair),
                f"Renamed the folder to {new_name}.", spot="folder")


@login_required
@require_POST
def trash(request, folder_id):
    try:
        folder = services.move_to_trash(request.user, folder_id.hex, keypair=request.user.main_keypair)
    except BackendAIError as exc:
        _fail(request, "folder", _error_text(exc))
        return _back(request, folder_id)
    messages.success(request, f"Moved {folder.name} to the trash.")
    return redirect("ui-vfolders:folders")


@login_required
@require_POST
def restore(request, folder_id):
    try:
        folder = services.restore_from_trash(request.user, folder_id, keypair=request.user.main_keypair)
    except BackendAIError as exc:
        messages.error(request, _error_text(exc))
    else:
        messages.success(request, f"Restored {folder.name}.")
    return redirect("ui-vfolders:folders")


@login_required
@require_POST
def purge(request, folder_id):
    try:
        services.purge(request.user, folder_id, keypair=request.user.main_keypair)
    except BackendAIError as exc:
        messages.error(request, _error_text(exc))
    else:
        messages.success(request, "Deleted the folder for good.")
    return redirect("ui-vfolders:folders")


@login_required
@require_POST
def invite(request, folder_id):
    form = InviteForm(request.POST)
    if not form.is_valid():
        _fail(request, "share", " ".join(e for errs in form.errors.values() for e in errs))
        return _back(request, folder_id)
    emails, permission = form.cleaned_data["emails"], form.cleaned_data["permission"]
    try:
        access = services.get_folder(request.user, folder_id.hex, need="manage")
        services.check_recipients(access.folder, emails)  # names the unknown emails; nothing is sent then
        if access.folder.ownership_type == OwnershipType.GROUP:
            done = services.share(request.user, folder_id.hex, permission, emails)
            verb = "Shared with"
        else:
            done = services.invite(request.user, folder_id.hex, permission, emails, keypair=request.user.main_keypair)
            verb = "Invited"
    except BackendAIError as exc:
        _fail(request, "share", _error_text(exc))
        return _back(request, folder_id)
    if done:
        messages.success(request, f"{verb} {', '.join(done)}.")
    else:
        _fail(request, "share", f"{', '.join(emails)}: already invited or already sharing this folder.")
    return _back(request, folder_id)


@login_required
@require_POST
def revoke(request, folder_id):
    """Take a user's access away: unshare (project folders) or remove an invitee."""
    user_id, email = request.POST.get("user_id", ""), request.POST.get("email", "")

    def action():
        access = services.get_folder(request.user, folder_id.hex)
        if access.folder.ownership_type == OwnershipType.GROUP:
            return services.unshare(request.user, folder_id.hex, [email])
        return services.leave(request.user, folder_id.hex, user_id)

    return _run(request, folder_id, action, f"{email} no longer shares this folder.", spot="share")


@login_required
@require_POST
def leave(request, folder_id):
    try:
        services.leave(request.user, folder_id.hex)
    except BackendAIError as exc:
        _fail(request, "folder", _error_text(exc))
        return _back(request, folder_id)
    messages.success(request, "You left the folder.")
    return redirect("ui-vfolders:folders")


@login_required
def invitations(request):
    user = request.user
    if request.method == "POST":
        inv_id, op = request.POST.get("inv_id", ""), request.POST.get("op", "")
        try:
            if op == "accept":
                grant = services.accept_invitation(user, inv_id)
                messages.success(request, f"You can now use the folder {grant.vfolder.name}.")
            elif op in ("reject", "cancel"):
                state = services.delete_invitation(user, inv_id)
                messages.success(request, f"Invitation {state}.")
            else:
                messages.error(request, "Unknown invitation action.")
        except BackendAIError as exc:
            messages.error(request, _error_text(exc))
        return redirect("ui-vfolders:invitations")
    return render(request, "vfolders/invitations.html", {
        "received": services.invitations_received(user), "sent": services.invitations_sent(user)})
