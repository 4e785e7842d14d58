"""The folder settings, read with defaults so the app works before they are configured."""
from __future__ import annotations

from django.conf import settings

DEFAULT_HOST_NAME = "local:volume1"


def default_host_name() -> str:
    return getattr(settings, "VFOLDER_DEFAULT_HOST", None) or DEFAULT_HOST_NAME


def token_lifetime() -> int:
    return int(getattr(settings, "VFOLDER_TOKEN_LIFETIME", 3600))


def max_upload_size() -> int:
    return int(getattr(settings, "VFOLDER_MAX_UPLOAD_SIZE", 100 * 2**30))


def usage_workers() -> int:
    """How many folder sizes the folder list measures at once (each is a walk on its proxy)."""
    return max(1, int(getattr(settings, "VFOLDER_USAGE_WORKERS", 8)))


def usage_timeout() -> float:
    """Seconds one size measurement of the folder list may take before it shows "unknown"."""
    return float(getattr(settings, "VFOLDER_USAGE_TIMEOUT", 3.0))
