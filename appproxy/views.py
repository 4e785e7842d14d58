"""Web UI entry of the app proxy: the session page's app buttons POST here.

``POST /ui/sessions/<uuid>/apps/<app>/open`` opens the app for the logged-in
user (``services.start_service``) and redirects the browser to the worker's
one-time setup URL, which sets the permit cookie and redirects to the app."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from appproxy import gateway
from backendai.api.errors import BackendAIError
from sessions import services as session_services


@login_required
@require_POST
def open_app(request, session_id, app):
    try:
        session = session_services.get_session(request.user, request.user.main_keypair, str(session_id))
    except BackendAIError:
        raise Http404("No such session") from None
    try:
        result = gateway.coordinator().start_service(request.user, session, app)
    except BackendAIError as exc:
        messages.error(request, f"Could not open {app}: {exc.msg or exc.error_title}")
        return redirect("ui-sessions:detail", session_id=session.pk)
    return redirect(result["url"])
