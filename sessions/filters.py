"""The filters of the sessions web UI's list (django-filter): whose sessions, which, and a search.

* ``scope``: mine, domain, all (the choices depend on the user's role; tabs);
* ``state``: all, active, finished (tabs);
* ``q``: part of the name, or the start of the id (dashed or not);
* ``status``, ``type``, ``group`` (resource group), and ``owner`` (part of the owner's email, for admins only).

The list's page offers these as tabs and a GET form, so a value that is missing, malformed or not the user's to
ask for falls back to "no filter" (the defaults) instead of answering an error; ``values`` says which are in force
and ``ignored`` which were dropped (the page says so beside the form).  Every filter narrows
``services.visible_sessions(user)``, so no filter widens what a user may see.
"""
from __future__ import annotations

import re

import django_filters
from django import forms
from django.db.models import Q

from sessions.lifecycle import DEAD_SESSION, SessionStatus
from sessions.models import SessionType

STATES = [("all", "All"), ("active", "Active"), ("finished", "Finished")]
STATUSES = [(s.value, s.value.replace("_", " ").capitalize()) for s in SessionStatus]
TYPES = list(SessionType.choices)
SEARCH_MAX = 64
GROUP_NAME = re.compile(r"^[\w.\-]{1,64}$")
_ID_PREFIX = re.compile(r"^[0-9a-fA-F\-]{4,36}$")


def scopes_for(user) -> list[tuple[str, str]]:
    """Whose sessions the user may list: their own; an admin also their domain's; a superadmin every domain's."""
    scopes = [("mine", "Mine")]
    if user.is_superadmin or user.is_domain_admin:
        scopes.append(("domain", f"Domain {user.domain_id}"))
    if user.is_superadmin:
        scopes.append(("all", "All domains"))
    return scopes


def id_prefix(text: str) -> str | None:
    """``"3f2a9c0d1e"`` or ``"3f2a9c0d-1e"`` -> ``"3f2a9c0d-1e"`` (the dashed form Postgres prints a uuid in);
    None when the text can't start a session id."""
    if not _ID_PREFIX.match(text):
        return None
    digits = text.replace("-", "").lower()
    if not digits or len(digits) > 32:
        return None
    dashed = ""
    for index, char in enumerate(digits):
        if index in (8, 12, 16, 20):
            dashed += "-"
        dashed += char
    return dashed


def _check_group(value: str) -> None:
    if value and not GROUP_NAME.match(value):
        raise forms.ValidationError("Not a resource group name.")


class SessionListFilter(django_filters.FilterSet):
    """See the module's docstring."""

    DEFAULTS = {"scope": "mine", "state": "all", "q": "", "status": "", "type": "", "group": "", "owner": ""}

    scope = django_filters.ChoiceFilter(choices=[("mine", "Mine")], method="filter_scope", empty_label=None)
    state = django_filters.ChoiceFilter(choices=STATES, method="filter_state", empty_label=None)
    q = django_filters.CharFilter(method="filter_search", max_length=SEARCH_MAX, label="Search")
    status = django_filters.ChoiceFilter(choices=STATUSES, method="filter_status", label="Status")
    type = django_filters.ChoiceFilter(choices=TYPES, method="filter_type", label="Type")
    group = django_filters.CharFilter(method="filter_group", max_length=64, label="Resource group",
                                      validators=[_check_group])
    owner = django_filters.CharFilter(method="filter_owner", max_length=SEARCH_MAX, label="Owner")

    def __init__(self, data, queryset, *, request):
        super().__init__(data, queryset, request=request)
        user = request.user
        self.is_admin = bool(user.is_superadmin or user.is_domain_admin)
        self.form.fields["scope"].choices = scopes_for(user)

    @property
    def values(self) -> dict[str, str]:
        self.form.is_valid()  # cleaned_data keeps the valid fields only
        cleaned = self.form.cleaned_data
        values = {name: (cleaned.get(name) or default) for name, default in self.DEFAULTS.items()}
        values["q"] = values["q"].strip()
        values["owner"] = values["owner"].strip() if self.is_admin else ""
        return values

    @property
    def ignored(self) -> list[str]:
        """The labels of the filters given but dropped (malformed, unknown, or not the user's to ask for)."""
        self.form.is_valid()
        dropped = [self.form.fields[name].label or name for name in self.form.errors]
        if not self.is_admin and (self.data.get("owner") or "").strip():
            dropped.append("Owner")
        return dropped

    @property
    def narrowed(self) -> bool:
        """Whether a search or a filter beyond the tabs is in force."""
        values = self.values
        return any(values[name] for name in ("q", "status", "type", "group", "owner"))

    def filter_queryset(self, queryset):
        for name, value in self.values.items():
            if value:
                queryset = self.filters[name].filter(queryset, value)
        return queryset

    def filter_scope(self, queryset, name, value):
        user = self.request.user
        if value == "mine":
            return queryset.filter(user=user)
        if value == "domain":
            return queryset.filter(domain_id=user.domain_id)
        return queryset  # all: every session the user may see

    def filter_state(self, queryset, name, value):
        if value == "active":
            return queryset.exclude(status__in=DEAD_SESSION)
        if value == "finished":
            return queryset.filter(status__in=DEAD_SESSION)
        return queryset

    def filter_search(self, queryset, name, value):
        condition = Q(name__icontains=value)
        prefix = id_prefix(value)
        if prefix:
            condition |= Q(id__startswith=prefix)
        return queryset.filter(condition)

    def filter_status(self, queryset, name, value):
        return queryset.filter(status=value)

    def filter_type(self, queryset, name, value):
        return queryset.filter(session_type=value)

    def filter_group(self, queryset, name, value):
        return queryset.filter(scaling_group_id=value)

    def filter_owner(self, queryset, name, value):
        if not self.is_admin:
            return queryset
        return queryset.filter(user__email__icontains=value)
