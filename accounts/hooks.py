"""Hooks that apps above ``accounts`` register, so accounts never imports them.

``register_concurrency_counter(fn)``: ``fn(access_keys)`` returns ``{access_key: n}``, the
number of sessions of each keypair that hold one of its concurrency slots (what GraphQL's
``KeyPair.concurrency_used`` answers).  The sessions app, which owns the session statuses,
registers it in its ``AppConfig.ready()``; with none registered the count is unknown (null).

``register_purge_handler(fn)``: ``fn(purge)`` is what an app does when a user or project is
purged (refuse while something live remains, else remove or hand over its rows)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

ConcurrencyCounter = Callable[[Iterable[str]], Mapping[str, int]]

_concurrency_counters: list[ConcurrencyCounter] = []


def register_concurrency_counter(counter: ConcurrencyCounter) -> ConcurrencyCounter:
    """Set the counter of keypairs' concurrent sessions (registering one twice keeps one)."""
    if counter not in _concurrency_counters:
        _concurrency_counters.append(counter)
    return counter


def unregister_concurrency_counter(counter: ConcurrencyCounter) -> None:
    if counter in _concurrency_counters:
        _concurrency_counters.remove(counter)


def concurrency_used(access_keys: Iterable[str]) -> dict[str, int] | None:
    """``{access_key: n}`` summed over the registered counters, or None when none is registered."""
    if not _concurrency_counters:
        return None
    keys = list(access_keys)
    total = dict.fromkeys(keys, 0)
    for counter in list(_concurrency_counters):
        for key, count in counter(keys).items():
            if key in total:
                total[key] += int(count)
    return total


# --- purging users and projects --------------------------------------------------------------------

@dataclass(frozen=True)
class Purge:
    """What is being purged (a ``User`` or a ``Project``), by whom, and how: ``keep_shared_folders``
    hands a purged user's folders that others use over to ``actor`` instead of deleting them
    (GraphQL ``PurgeUserInput.purge_shared_vfolders`` false, the default)."""

    target: object
    actor: object
    keep_shared_folders: bool = True


PurgeAction = Callable[[], None]
PurgeHandler = Callable[[Purge], "PurgeAction | None"]

_purge_handlers: list[PurgeHandler] = []


def register_purge_handler(handler: PurgeHandler) -> PurgeHandler:
    """Add what an app does when a user or project is purged.  ``handler(purge)`` checks: it
    raises an API error when something of its app forbids the purge (a live session, a folder
    in use), and otherwise returns the action that removes (or hands over) its rows of the
    target, or None.  Every handler checks before any action runs, so a refused purge changes
    nothing; the actions run in registration order inside the purge's transaction.  Apps
    register theirs in ``AppConfig.ready()``."""
    if handler not in _purge_handlers:
        _purge_handlers.append(handler)
    return handler


def run_purge_handlers(purge: Purge) -> None:
    actions = [action for action in (handler(purge) for handler in list(_purge_handlers)) if action]
    for action in actions:
        action()


# --- the web UI's dashboard and settings ------------------------------------------------------------

DashboardProvider = Callable[[object], Mapping[str, object]]
ChoicesProvider = Callable[[object], Mapping[str, list]]

_dashboard_providers: list[DashboardProvider] = []
_choices_providers: list[ChoicesProvider] = []


def register_dashboard_provider(provider: DashboardProvider) -> DashboardProvider:
    """Add what an app shows on a user's dashboard: ``provider(user)`` returns template
    context entries (the sessions app: running sessions with their live usage, quota in use,
    the resource groups' capacity, recent session events).  It must read the database in a
    fixed number of queries whatever the user owns: the dashboard polls it every few seconds."""
    if provider not in _dashboard_providers:
        _dashboard_providers.append(provider)
    return provider


def unregister_dashboard_provider(provider: DashboardProvider) -> None:
    if provider in _dashboard_providers:
        _dashboard_providers.remove(provider)


def dashboard_parts(user) -> dict:
    """The registered providers' entries for ``user``, merged in registration order."""
    parts: dict = {}
    for provider in list(_dashboard_providers):
        parts.update(provider(user))
    return parts


def register_choices_provider(provider: ChoicesProvider) -> ChoicesProvider:
    """Add what a user may pick in the settings: ``provider(user)`` returns
    ``{"presets": [name, ...], "resource_groups": [name, ...]}`` (either key may be missing)."""
    if provider not in _choices_providers:
        _choices_providers.append(provider)
    return provider


def unregister_choices_provider(provider: ChoicesProvider) -> None:
    if provider in _choices_providers:
        _choices_providers.remove(provider)


def user_choices(user) -> dict[str, list[str]]:
    """``{"presets": [...], "resource_groups": [...]}``: what ``user`` may use, from every provider."""
    choices: dict[str, list[str]] = {"presets": [], "resource_groups": []}
    for provider in list(_choices_providers):
        for key, names in provider(user).items():
            known = choices.setdefault(key, [])
            known.extend(name for name in names if name not in known)
    return choices
