"""What requests name, checked as the API reports it: folder names and free text
(the rules of ``storageproxy.names``), ids and choices."""
from __future__ import annotations

import uuid
from contextlib import contextmanager

from backendai.api import errors
from storageproxy import names
from vfolders.models import OwnershipType, UsageMode, VFolderPermission

RESERVED_VFOLDERS = names.RESERVED_VFOLDERS
ROUTE_NAMES = names.ROUTE_NAMES
verify_vfolder_name = names.verify_vfolder_name
PERMISSIONS = [p.value for p in VFolderPermission]
USAGE_MODES = [m.value for m in UsageMode]
#: The kinds of folder this server creates (``/config/vfolder-types``, ``/folders/_/allowed-types``).
FOLDER_TYPES = [t.value for t in OwnershipType]


@contextmanager
def name_errors():
    """``names.InvalidName`` as the API reports it (400 ``invalid-api-params``)."""
    try:
        yield
    except names.InvalidName as exc:
        raise errors.InvalidAPIParameters(str(exc)) from None


def validate_folder_name(name, what: str = "name") -> str:
    """The folder name rules of ``storageproxy.names`` (create, rename, clone alike)."""
    with name_errors():
        return names.check_folder_name(name, what)


def check_text(value, what: str, max_chars: int | None = None) -> str:
    """A free-text reference (host, project, email): a string without control characters."""
    with name_errors():
        return names.check_text(value, what, max_chars=max_chars)


def parse_uuid(value) -> uuid.UUID | None:
    """An id, dashed or hex; None for anything else."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or len(value) not in (32, 36):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def choice(value, allowed, what):
    if value not in allowed:
        raise errors.InvalidAPIParameters(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value
