"""``{% commit_panel session can_commit %}``: the "Commit to image" card of a session's page
(``templates/sessions/_commit_panel.html``), with the state of its last commit."""
from __future__ import annotations

from django import template

from backendai.bgtasks import FINISHED
from sessions import commit

register = template.Library()


@register.inclusion_tag("sessions/_commit_panel.html")
def commit_panel(session, can_commit):
    task = commit.last_commit(session)
    kwargs = (task.kwargs or {}) if task is not None else {}
    return {
        "session": session,
        "can_commit": bool(can_commit),
        "task": task,
        "ongoing": task is not None and task.status not in FINISHED,
        "image": f"{kwargs.get('repository')}:{kwargs.get('tag')}" if task is not None else "",
    }
