"""Hooks that apps above ``vfolders`` register, so vfolders never imports them.

``register_mount_lookup(fn)``: ``fn(folder)`` returns the names (or ids) of the live
sessions that mount ``folder``.  The sessions app registers its lookup in its
``AppConfig.ready()``; with none registered, no session mounts any folder."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vfolders.models import VFolder

MountLookup = Callable[["VFolder"], Iterable[str]]

_mount_lookups: list[MountLookup] = []


def register_mount_lookup(lookup: MountLookup) -> MountLookup:
    """Add a lookup of the live sessions that mount a folder (registering one twice keeps one)."""
    if lookup not in _mount_lookups:
        _mount_lookups.append(lookup)
    return lookup


def mount_lookups() -> tuple[MountLookup, ...]:
    """The lookups registered so far."""
    return tuple(_mount_lookups)


def sessions_mounting(folder: VFolder, limit: int = 5) -> list[str]:
    """The live sessions that mount ``folder``, as every registered lookup reports them
    (at most ``limit`` names, for a message)."""
    found: list[str] = []
    for lookup in list(_mount_lookups):
        for name in map(str, lookup(folder)):
            if name not in found:
                found.append(name)
            if len(found) >= limit:
                return found
    return found
