"""``{% commit_panel session can_commit %}``: the "Commit to image" card of a session's page
(``templates/sessions/_commit_panel.html``), with the state of its last commit."""
from __future__ import annotations

from django import template

from backendai.bgtasks import FINISHED
from sessions import commit

register = template.Library()


@register.inclusion_tag("sessions/_commit_panel.html", takes_context=True)
def commit_panel(context, session, can_work):
    """``can_work``: the session runs and its agent is reachable; a commit also needs the Docker backend."""
    task = commit.last_commit(session)
    kwargs = (task.kwargs or {}) if task is not None else {}
    backend = commit.main_kernel_backend(session)
    other_backend = backend if backend not in (None, commit.DOCKER_BACKEND) else None
    return {
        "session": session,
        "messages": context.get("messages"),
        "running": bool(context.get("can_restart", can_work)),
        "other_backend": other_backend,
        "can_commit": bool(can_work) and other_backend is None,
        "task": task,
        "ongoing": task is not None and task.status not in FINISHED,
        "image": f"{kwargs.get('repository')}:{kwargs.get('tag')}" if task is not None else "",
    }
