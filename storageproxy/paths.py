"""Lexical path and name checks for folder-relative paths, and the storage errors.

No I/O: the manager imports this module to validate what it forwards to the proxy.
(Moved from the manager's former ``vfolders.storage``.)"""
from __future__ import annotations

from pathlib import Path

from storageproxy import names

MAX_NAME_BYTES = names.NAME_MAX_BYTES
MAX_PATH_BYTES = names.PATH_MAX_BYTES

# --- errors -----------------------------------------------------------------------------------

class StorageError(Exception):
    """Base of what this module raises; the message is meant for the user."""


class UnsafePath(StorageError):
    """The path is malformed or leaves the folder."""


class NoSuchPath(StorageError):
    """Nothing exists at the path (or a parent directory is missing)."""


class PathConflict(StorageError):
    """The operation does not fit what is on disk (exists, not a directory, not empty...)."""


class OffsetMismatch(StorageError):
    def __init__(self, current: int):
        self.current = current
        super().__init__(f"Upload-Offset does not match the stored offset {current}")


class UploadBusy(StorageError):
    """Another request is writing the same upload right now."""


class TooMuchData(StorageError):
    """A chunk would go past what the upload may write (declared size or quota)."""

    def __init__(self, message: str, reason: str):
        self.reason = reason  # "size" or "quota"
        super().__init__(message)


# --- lexical checks ---------------------------------------------------------------------------

def clean_relpath(raw, *, allow_root: bool = True, what: str = "path", new: bool = False) -> tuple[str, ...]:
    """The components of a user path relative to a folder root, or ``UnsafePath``.

    ``""`` and ``"."`` mean the root (when ``allow_root``); ``a//b`` and ``./a``
    are normalised; absolute paths, ``..``, backslashes, control characters,
    names with leading or trailing whitespace and over-long names are refused
    outright rather than "fixed" (the rules are ``storageproxy.names``).  ``new``:
    the path names something to create, so it must also be safe on Windows."""
    if isinstance(raw, Path):
        raw = str(raw)
    try:
        return names.split_path(raw, what, allow_root=allow_root, new=new)
    except names.InvalidName as exc:
        raise UnsafePath(str(exc)) from None


def clean_name(raw, what: str = "name") -> str:
    """A single new path component (a new file name)."""
    try:
        return names.check_component(raw, what, new=True)
    except names.InvalidName as exc:
        raise UnsafePath(str(exc)) from None


def display_path(parts: tuple[str, ...]) -> str:
    return "/".join(parts) if parts else "."




# --- quota scopes and folder ids --------------------------------------------------------------

SCOPE_KINDS = ("user", "project")


def parse_qsid(raw, what: str = "qsid") -> tuple[str, str]:
    """A quota scope id ``user:<uuid>`` or ``project:<uuid>`` as (kind, uuid hex)."""
    import uuid

    if not isinstance(raw, str) or len(raw) > 64:
        raise UnsafePath(f"{what}: must be user:<uuid> or project:<uuid>")
    kind, sep, ident = raw.partition(":")
    try:
        parsed = uuid.UUID(ident) if sep and len(ident) <= 36 else None
    except ValueError:
        parsed = None
    if kind not in SCOPE_KINDS or parsed is None:
        raise UnsafePath(f"{what}: must be user:<uuid> or project:<uuid>")
    return kind, parsed.hex


def scope_dirname(qsid: str) -> str:
    """The scope's directory name on a volume: ``<kind>-<uuid hex>``."""
    kind, ident = parse_qsid(qsid)
    return f"{kind}-{ident}"


def parse_vfid(raw, what: str = "vfid") -> tuple[str, str]:
    """A folder id ``<qsid>/<folder uuid hex>`` as (normalised qsid, folder hex)."""
    import uuid

    if not isinstance(raw, str) or len(raw) > 128 or raw.count("/") != 1:
        raise UnsafePath(f"{what}: must be <quota scope id>/<folder uuid hex>")
    qsid, _, folder = raw.partition("/")
    kind, ident = parse_qsid(qsid, what)
    try:
        parsed = uuid.UUID(folder) if len(folder) <= 36 else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise UnsafePath(f"{what}: must be <quota scope id>/<folder uuid hex>")
    return f"{kind}:{uuid.UUID(ident)}", parsed.hex


def folder_relpath(vfid: str) -> tuple[str, str, str, str]:
    """The folder's directory below the volume root: (scope dir, hex[0:2], hex[2:4], hex[4:])."""
    qsid, folder = parse_vfid(vfid)
    return scope_dirname(qsid), folder[0:2], folder[2:4], folder[4:]
