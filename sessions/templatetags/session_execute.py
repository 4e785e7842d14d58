"""``{% execute_console session can_run %}``: the "Run code" card of a session's page
(``templates/sessions/_execute.html``), shown only when the session's image declares a Python
runtime (its ``ai.backend.runtime-type`` label)."""
from __future__ import annotations

from django import template

from agents.models import Image

register = template.Library()


def has_runtime(session) -> bool:
    labels = Image.objects.filter(name=session.image).values_list("labels", flat=True).first() or {}
    return labels.get("ai.backend.runtime-type") == "python"


@register.inclusion_tag("sessions/_execute.html")
def execute_console(session, can_run, agent_lost=False):
    """``can_run``: the session runs and its agent is reachable; ``agent_lost`` says why not."""
    return {"session": session, "can_run": bool(can_run), "agent_lost": bool(agent_lost),
            "shown": has_runtime(session)}
