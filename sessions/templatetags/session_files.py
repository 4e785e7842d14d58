"""``{% upload_limit as limit %}``: the largest upload into a running session (``SESSION_UPLOAD_MAX_SIZE``), for the
file card's hint and its check before sending (``templates/sessions/_files.html``, ``static/sessions/files.js``)."""
from __future__ import annotations

from django import template

from sessions import files

register = template.Library()


@register.simple_tag
def upload_limit() -> int:
    return files.upload_limit()
