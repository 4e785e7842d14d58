"""Template filters of the folder pages: permissions spelled out."""
from django import template

from vfolders.models import VFolderPermission

register = template.Library()

#: What each permission lets one do, as the pages say it.
PERMISSION_WORDS = {
    VFolderPermission.READ_ONLY.value: "read only",
    VFolderPermission.READ_WRITE.value: "read-write",
    VFolderPermission.RW_DELETE.value: "read-write-delete",
}


@register.filter
def perm_label(code) -> str:
    """``ro`` -> ``read only``, ``rw`` -> ``read-write``, ``wd`` -> ``read-write-delete``."""
    return PERMISSION_WORDS.get(str(code), str(code))


@register.filter
def vf_fraction(value, fraction) -> int:
    """``value * fraction`` as a whole number (a <meter>'s low/high marks)."""
    try:
        return int(int(value) * float(fraction))
    except (TypeError, ValueError):
        return 0
