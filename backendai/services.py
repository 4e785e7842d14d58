"""Manager-wide business rules: the announcement and the known slot types."""
from __future__ import annotations

import logging

from django.db import transaction

from backendai.actions import audited
from backendai.models import Announcement, ResourceSlotType
from backendai.slots import INTRINSIC_SLOTS

log = logging.getLogger(__name__)

SLOT_DISPLAY = {"cpu": ("CPU", "Core"), "mem": ("RAM", "GiB")}


def get_announcement() -> Announcement:
    return Announcement.objects.order_by("pk").first() or Announcement(enabled=False, message="")


@audited("announcement", "set")
@transaction.atomic
def set_announcement(enabled: bool, message: str) -> Announcement:
    announcement = Announcement.objects.select_for_update().order_by("pk").first() or Announcement()
    announcement.enabled = enabled
    announcement.message = message
    announcement.save()
    Announcement.objects.exclude(pk=announcement.pk).delete()
    log.info("announcement set enabled=%s", enabled)
    return announcement


def ensure_intrinsic_slot_types() -> None:
    for name, slot_type in INTRINSIC_SLOTS.items():
        display_name, unit = SLOT_DISPLAY.get(name, (name, ""))
        ResourceSlotType.objects.get_or_create(
            name=name, defaults={"slot_type": slot_type, "display_name": display_name, "display_unit": unit}
        )


def register_slot_types(slot_types: dict[str, str]) -> None:
    """Record slot names reported by agents; existing names keep their type."""
    known = set(ResourceSlotType.objects.filter(name__in=slot_types).values_list("name", flat=True))
    ResourceSlotType.objects.bulk_create(
        [ResourceSlotType(name=n, slot_type=t) for n, t in slot_types.items() if n not in known],
        ignore_conflicts=True,
    )


def known_slot_types() -> dict[str, str]:
    types = dict(INTRINSIC_SLOTS)
    types.update(dict(ResourceSlotType.objects.values_list("name", "slot_type")))
    return types
