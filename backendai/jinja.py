"""The Jinja2 environment of the web UI's hot fragments (settings.TEMPLATES' second engine).

Most pages are Django templates.  A fragment rendered once per row of a long list, on a page the
browser also polls every two seconds (the sessions list's rows: ``templates/jinja2/sessions/``),
is a Jinja2 template instead: Jinja2 compiles a template to Python once, where Django's engine walks
its node tree and resolves every variable through the context stack at each render, which made the
rows 57 % of the sessions page's CPU (docs/performance.md, API reads).  Autoescaping is on, as in the
Django templates; ``csrf_input`` and ``request`` come from Django's Jinja2 backend.

The few Django helpers such a fragment needs are here, with the same output as their Django filters:
``url`` (``{% url %}``), ``date`` (in the current time zone, like ``|date``), ``slots``."""
from __future__ import annotations

from django.urls import reverse
from django.utils import dateformat, timezone
from jinja2 import Environment

from backendai.templatetags.slots import slots_filter


def local_date(value, fmt: str) -> str:
    """Django's ``|date:fmt``: an aware datetime in the current time zone; empty for None."""
    if value is None:
        return ""
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return dateformat.format(value, fmt)


def url(name: str, *args, **kwargs) -> str:
    return reverse(name, args=args or None, kwargs=kwargs or None)


def environment(**options) -> Environment:
    env = Environment(**options)
    env.globals["url"] = url
    env.filters["date"] = local_date
    env.filters["slots"] = slots_filter
    return env
