"""The folder settings, read with defaults so the app works before they are configured."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings

DEFAULT_HOST_NAME = "local:volume1"


def vfolder_root() -> Path:
    root = getattr(settings, "VFOLDER_ROOT", None)
    return Path(root) if root else Path(settings.DATA_DIR) / "vfroot"


def default_host_name() -> str:
    return getattr(settings, "VFOLDER_DEFAULT_HOST", None) or DEFAULT_HOST_NAME


def token_lifetime() -> int:
    return int(getattr(settings, "VFOLDER_TOKEN_LIFETIME", 3600))


def max_upload_size() -> int:
    return int(getattr(settings, "VFOLDER_MAX_UPLOAD_SIZE", 100 * 2**30))


def max_chunk_size() -> int:
    return int(getattr(settings, "VFOLDER_MAX_CHUNK_SIZE", 64 * 2**20))


def dir_mode() -> int:
    return int(getattr(settings, "VFOLDER_DIR_MODE", 0o755))


def file_mode() -> int:
    return int(getattr(settings, "VFOLDER_FILE_MODE", 0o644))


def public_base_url(request=None) -> str:
    """The base URL clients use for upload and download tokens."""
    configured = getattr(settings, "VFOLDER_PUBLIC_URL", None)
    if configured:
        return configured.rstrip("/") + "/"
    if request is not None:
        return request.build_absolute_uri("/")
    return "http://127.0.0.1:8091/"
