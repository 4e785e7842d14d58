"""A user's web UI preferences: the preset and resource group the launcher starts with, the
language and the time zone pages render in (``accounts.models.UserPreferences``).

``preferences_for(user)`` is what other apps read (the launcher pre-selects
``default_preset`` and ``default_resource_group``); ``save_preferences`` is the only writer
and accepts a preset or resource group only among the ones the user may use (the caller
passes those choices, which the apps above accounts compute: ``accounts.hooks.user_choices``)."""
from __future__ import annotations

import logging
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, ValidationError

from accounts import hooks
from accounts.models import User, UserPreferences
from backendai.actions import audited

log = logging.getLogger("accounts.services")

DEFAULT_LANGUAGE = "en"


@dataclass(frozen=True)
class Preferences:
    default_preset: str = ""  # a preset's name, or "" for the launcher's own default
    default_resource_group: str = ""  # a scaling group's name, or ""
    language: str = DEFAULT_LANGUAGE  # one of settings.LANGUAGES
    time_zone: str = "UTC"  # an IANA zone name


def language_choices() -> list[tuple[str, str]]:
    return [(code, str(name)) for code, name in settings.LANGUAGES]


@lru_cache(maxsize=1)
def time_zone_names() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def server_time_zone() -> str:
    return settings.TIME_ZONE or "UTC"


def _stored(user: User) -> UserPreferences | None:
    """The user's row: the one ``select_related("preferences")`` (the login backend) cached, or a query."""
    try:
        return user.preferences
    except ObjectDoesNotExist:
        return None


def _as_preferences(row: UserPreferences | None) -> Preferences:
    if row is None:
        return Preferences(time_zone=server_time_zone())
    languages = {code for code, _ in settings.LANGUAGES}
    return Preferences(
        default_preset=row.default_preset,
        default_resource_group=row.default_resource_group,
        language=row.language if row.language in languages else DEFAULT_LANGUAGE,
        time_zone=row.time_zone if row.time_zone in time_zone_names() else server_time_zone(),
    )


def preferences_for(user) -> Preferences:
    """The user's preferences, with the defaults for what they did not choose (anonymous: defaults)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return Preferences(time_zone=server_time_zone())
    return _as_preferences(_stored(user))


@audited("user", "save-preferences", "user")
def save_preferences(user: User, *, default_preset: str, default_resource_group: str, language: str,
                     time_zone: str, allowed_presets, allowed_resource_groups) -> Preferences:
    """Store the user's choices; every value must be one the user may pick (``""`` for none),
    else a ValidationError names the fields and nothing is stored."""
    errors = {}
    if default_preset and default_preset not in set(allowed_presets):
        errors["default_preset"] = "Pick one of the presets you may use."
    if default_resource_group and default_resource_group not in set(allowed_resource_groups):
        errors["default_resource_group"] = "Pick one of the resource groups you may use."
    if language not in {code for code, _ in settings.LANGUAGES}:
        errors["language"] = "Pick one of the languages listed."
    if time_zone not in time_zone_names():
        errors["time_zone"] = "Pick a time zone from the list."
    if errors:
        raise ValidationError(errors)
    row, _ = UserPreferences.objects.update_or_create(user=user, defaults={
        "default_preset": default_preset, "default_resource_group": default_resource_group,
        "language": language, "time_zone": time_zone})
    user.preferences = row  # what this request reads from now on
    log.info("preferences of user %s saved (preset=%r group=%r language=%s zone=%s)",
             user.pk, default_preset, default_resource_group, language, time_zone)
    return _as_preferences(row)


def choices_for(user) -> dict[str, list[str]]:
    """What the user may pick as defaults: ``{"presets": [...], "resource_groups": [...]}``
    (the apps that own presets and resource groups answer through ``accounts.hooks``)."""
    return hooks.user_choices(user)
