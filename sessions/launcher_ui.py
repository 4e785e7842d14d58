"""The launcher's live hint (``/ui/sessions/new/hint/``): as the create form changes,
htmx posts it here and swaps in one line, "This would start now on <agent>" or "This
would wait because …" (``sessions.launch_check.assess``: the scheduler's predicates and
agent selection run in memory, nothing written), plus the amount fields' bounds for the
chosen image, resource group and cluster (out-of-band swaps)."""
from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_POST

from backendai.api.errors import BackendAIError
from sessions import launch_check
from sessions.forms import SessionCreateForm, attach_bounds, build_context

log = logging.getLogger(__name__)


def _first_error(form) -> str:
    for name, messages in form.errors.items():
        if name == "__all__":
            return messages[0]
        label = form.fields[name].label if name in form.fields else name
        return f"{label}: {messages[0]}"
    return ""


@login_required
@require_POST
def launch_hint(request):
    context = build_context(request.user, request.POST.get("project"))
    attach_bounds(context, request.POST)
    form = SessionCreateForm(request.POST, context=context)
    hint = {"verdict": "", "text": ""}
    if not (request.POST.get("image") or "").strip():
        hint["text"] = "Choose an image to see whether the session would start now."
    elif not form.is_valid():
        quota = form.errors.get("preset")
        if quota:  # the amounts are over the remaining quota (the form's own check): it cannot start
            hint.update(verdict=launch_check.REFUSE, text=f"This cannot start: {quota[0]}")
        else:
            hint.update(verdict="invalid", text=f"Check the form first ({_first_error(form)}).")
    else:
        try:
            # what the form read already (slot types, project, image) is not read again
            known = launch_check.Known(slot_types=context.slot_types, project=context.project,
                                       image=context.resolved_image)
            assessment = launch_check.assess(request.user, request.user.main_keypair, form.enqueue_request(),
                                             known=known)
        except BackendAIError as exc:
            hint.update(verdict=launch_check.REFUSE, text=f"This cannot start: {exc.msg or exc.error_title}")
        else:
            hint.update(verdict=assessment.verdict, text=assessment.text)
        log.debug("launch hint for user %s: %s", request.user.pk, hint["text"])
    response = render(request, "sessions/_launch_hint.html", {"hint": hint, "form": form, "ctx": context})
    response["Cache-Control"] = "no-store"
    response["X-Live-Fragment"] = "1"
    return response
