"""The web UI's file browser of a running session (``templates/sessions/_files.html``): list a
directory of the work directory, download a file, upload one.  Logged-in users (cookie, CSRF on
the upload), the same rules and the same service as the API (``sessions.files``).  The listing is a
fragment htmx loads into the session page; without JavaScript it is a page of its own."""
from __future__ import annotations

import json
import posixpath
import re
from datetime import datetime, timezone

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST

from backendai.api.errors import BackendAIError
from backendai.streaming import is_asgi
from sessions import files as files_service
from sessions import services
from sessions.api.files_views import MULTIPART_OVERHEAD, _attachment, _SpoolToDisk
from sessions.streams import http_target


def _session(request, session_id):
    try:
        return services.get_session(request.user, request.user.main_keypair, str(session_id))
    except BackendAIError:
        raise Http404("No such session") from None


def _target(request, session):
    return http_target(request.user, request.user.main_keypair, str(session.pk))


#: where the upload's outcome is shown: in the file card, beside the field (templates/sessions/_card_messages.html)
IN_CARD = "in-card files"


def _why(exc: BackendAIError) -> str:
    """The refusal for a person: without the agent's reason code (``is-a-directory: /home/work/x is a
    directory`` reads ``/home/work/x is a directory``), ending with a full stop."""
    text = re.sub(r"^[a-z]+(?:-[a-z]+)+: ", "", exc.msg or exc.error_title or "refused")
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _crumbs(path: str) -> list[dict]:
    crumbs, parts = [{"name": "work", "path": "."}], []
    for part in [] if path == "." else path.split("/"):
        parts.append(part)
        crumbs.append({"name": part, "path": "/".join(parts)})
    return crumbs


@login_required
@require_GET
def session_files(request, session_id):
    """The entries of ``?path=`` (default: the work directory)."""
    session = _session(request, session_id)
    context = {"session": session, "path": ".", "entries": [], "error": "", "parent": None}
    try:
        path = files_service.clean_path(request.GET.get("path", "."), "path")
        parent = (posixpath.dirname(path) or ".") if path != "." else None
        context.update(path=path, crumbs=_crumbs(path), parent=parent)
        listing = files_service.list_files(_target(request, session), path, is_asgi(request))
    except BackendAIError as exc:
        context["error"] = _why(exc)
    else:
        entries = json.loads(listing["files"])
        for entry in entries:
            entry["is_dir"] = entry["mode"].startswith("d")
            entry["modified"] = datetime.fromtimestamp(entry["mtime"], tz=timezone.utc)
            entry["path"] = entry["filename"] if path == "." else f"{path}/{entry['filename']}"
        context["entries"] = sorted(entries, key=lambda e: (not e["is_dir"], e["filename"]))
        context["truncated"] = listing.get("truncated")
    template = "sessions/_files_listing.html" if request.htmx else "sessions/files.html"
    response = render(request, template, context)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_GET
def session_file_download(request, session_id):
    """One file's bytes, streamed from the kernel."""
    session = _session(request, session_id)
    try:
        path = files_service.clean_path(request.GET.get("path"), "path", allow_root=False)
        download = files_service.open_download(_target(request, session), [path], single=True,
                                               asgi=is_asgi(request))
    except BackendAIError as exc:
        messages.error(request, f"Could not download {posixpath.basename(request.GET.get('path') or '')}: {_why(exc)}",
                       extra_tags=IN_CARD)
        return redirect(reverse("ui-sessions:detail", kwargs={"session_id": session.pk}) + "#files")
    response = StreamingHttpResponse(download.body(), content_type="application/octet-stream")
    response["Content-Disposition"] = _attachment(posixpath.basename(path))
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
@csrf_exempt  # checked below, once the upload handlers are in place (Django's documented order)
def session_file_upload(request, session_id):
    limit = files_service.upload_limit()
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = -1
    session = _session(request, session_id)
    back = reverse("ui-sessions:detail", kwargs={"session_id": session.pk}) + "#files"
    if declared < 0 or declared > limit + MULTIPART_OVERHEAD:
        messages.error(request, f"Could not upload: the upload is larger than the limit of {filesizeformat(limit)}.",
                       extra_tags=IN_CARD)
        return redirect(back)
    request.upload_handlers = [_SpoolToDisk(request, limit)]
    try:
        return _upload(request, session, back)
    except BackendAIError as exc:  # over the limit while the CSRF check read the form
        messages.error(request, f"Could not upload: {_why(exc)}", extra_tags=IN_CARD)
        return redirect(back)


@csrf_protect
def _upload(request, session, back):
    attached = request.FILES.getlist("file")
    try:
        directory = files_service.clean_path(request.POST.get("path", "."), "path")
        uploads = [files_service.Upload(
            files_service.clean_path(posixpath.join(directory, posixpath.basename(getattr(f, "relative_path", f.name))),
                                     "file", allow_root=False),
            f.size, f.read) for f in attached]
        files_service.check_uploads(uploads)
        files_service.upload_files(_target(request, session), uploads, is_asgi(request))
    except BackendAIError as exc:
        messages.error(request, f"Could not upload: {_why(exc)}", extra_tags=IN_CARD)
    else:
        messages.success(request, f"Uploaded {', '.join(u.path for u in uploads)}.", extra_tags=IN_CARD)
    finally:
        for f in attached:
            f.close()
    return redirect(back)
