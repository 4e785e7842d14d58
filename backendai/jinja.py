"""The Jinja2 environment of the web UI's hot fragments (settings.TEMPLATES' second engine).

Most pages are Django templates.  A fragment rendered once per row of a long list, on a page the
browser also polls every two seconds (the sessions list's rows: ``templates/jinja2/sessions/``),
is a Jinja2 template instead: Jinja2 compiles a template to Python once, where Django's engine walks
its node tree and resolves every variable through the context stack at each render, which made the
rows 57 % of the sessions page's CPU (docs/performance.md, API reads).  Autoescaping is on, as in the
Django templates.

``Jinja2`` is Django's backend with one change: a template rendered with a request gets ``csrf_input``
and ``csrf_token`` made once, on first use, as a Django template's ``{% csrf_token %}`` does.  Django's
own backend passes lazy values that make a new masked token each time a form prints one (the sessions
list has one per Destroy and Open button: 14 % of its CPU).

The few Django helpers such a fragment needs are here, with the same output as their Django filters:
``url`` (``{% url %}``), ``date`` (in the current time zone, like ``|date``), ``slots``."""
from __future__ import annotations

from django.middleware.csrf import get_token
from django.template.backends import jinja2 as django_jinja2
from django.urls import reverse
from django.utils import dateformat, timezone
from django.utils.functional import SimpleLazyObject
from django.utils.html import format_html
from jinja2 import Environment

from backendai.templatetags.slots import slots_filter

CSRF_INPUT = '<input type="hidden" name="csrfmiddlewaretoken" value="{}">'  # Django's csrf_input


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


class Template(django_jinja2.Template):
    def render(self, context=None, request=None):
        if request is None:
            return super().render(context)
        context = dict(context or {})
        context["request"] = request
        token = SimpleLazyObject(lambda: get_token(request))  # masked once, if a form asks
        context["csrf_token"] = token
        context["csrf_input"] = SimpleLazyObject(lambda: format_html(CSRF_INPUT, token))
        for context_processor in self.backend.template_context_processors:
            context.update(context_processor(request))
        return super().render(context)


class Jinja2(django_jinja2.Jinja2):
    """settings.TEMPLATES' ``jinja2`` engine: Django's, its templates rendering through ``Template``."""

    def from_string(self, template_code):
        return Template(super().from_string(template_code).template, self)

    def get_template(self, template_name):
        return Template(super().get_template(template_name).template, self)
