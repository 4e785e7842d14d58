"""The filters of the sessions web UI's list (django-filter): whose sessions and which."""
from __future__ import annotations

import django_filters

from sessions.lifecycle import DEAD_SESSION

STATES = [("all", "All"), ("active", "Active"), ("finished", "Finished")]


def scopes_for(user) -> list[tuple[str, str]]:
    """Whose sessions the user may list: their own; an admin also their domain's; a superadmin every domain's."""
    scopes = [("mine", "Mine")]
    if user.is_superadmin or user.is_domain_admin:
        scopes.append(("domain", f"Domain {user.domain_id}"))
    if user.is_superadmin:
        scopes.append(("all", "All domains"))
    return scopes


class SessionListFilter(django_filters.FilterSet):
    """``scope`` (mine, domain, all: the choices depend on the user's role) and ``state`` (all, active, finished)
    over the sessions the user may see.

    The page offers these values as tabs only, so a value that is missing, unknown or not the user's to ask for
    falls back to the default (mine, all) instead of answering an error; ``values`` says which are in force.
    """

    DEFAULTS = {"scope": "mine", "state": "all"}

    scope = django_filters.ChoiceFilter(choices=[("mine", "Mine")], method="filter_scope", empty_label=None)
    state = django_filters.ChoiceFilter(choices=STATES, method="filter_state", empty_label=None)

    def __init__(self, data, queryset, *, request):
        super().__init__(data, queryset, request=request)
        self.form.fields["scope"].choices = scopes_for(request.user)

    @property
    def values(self) -> dict[str, str]:
        self.form.is_valid()  # cleaned_data keeps the valid fields only
        cleaned = self.form.cleaned_data
        return {name: cleaned.get(name) or default for name, default in self.DEFAULTS.items()}

    def filter_queryset(self, queryset):
        for name, value in self.values.items():
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
