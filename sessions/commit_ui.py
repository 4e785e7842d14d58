"""The web UI's "Commit to image" button (``templates/sessions/_commit_panel.html``): starts the
commit (``sessions.commit.start_commit``, the same rules as the API) and shows its task's page."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from backendai.api.errors import BackendAIError
from sessions import commit, services


@login_required
@require_POST
def session_commit(request, session_id):
    try:
        session = services.get_session(request.user, request.user.main_keypair, str(session_id))
    except BackendAIError:
        raise Http404("No such session") from None
    try:
        task_id, image = commit.start_commit(request.user, request.user.main_keypair, str(session.pk))
    except BackendAIError as exc:
        # shown in the commit card, beside its button (templates/sessions/_card_messages.html)
        messages.error(request, f"Could not commit {session.name}: {exc.msg or exc.error_title}",
                       extra_tags="in-card commit")
        return redirect(reverse("ui-sessions:detail", kwargs={"session_id": session.pk}) + "#commit")
    messages.success(request, f"Committing {session.name} to {image}.")
    return redirect("ui:task", task_id=task_id)
