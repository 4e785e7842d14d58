"""Resource presets: named resource shapes users pick when they create a session.

The one place that changes them: GraphQL (``create_resource_preset``,
``modify_resource_preset``, ``delete_resource_preset`` in ``sessions.gql``), the
Django admin (``sessions.admin.ResourcePresetAdmin``) and any other door call
these functions, and only a superadmin may.  Every field is checked before
anything is written, so a refused change changes nothing:

* ``name``: 1 to 256 characters, no control characters, unique;
* ``resource_slots``: an object of known slots (``/config/resource-slots``) with
  finite, non-negative amounts, at least one above zero; byte slots take binary
  sizes (``4g``) and are stored in bytes;
* ``shared_memory``: a byte amount (``"64m"`` or an integer), or none; below the
  preset's memory when it names one;
* ``scaling_group``: an existing scaling group, or none (the preset is offered everywhere).

Reading: a superadmin sees every preset; anyone else the presets offered
everywhere and those of the scaling groups they may use
(``agents.services.allowed_scaling_groups``), as ``check-presets`` offers them.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet

from agents import services as agent_services
from agents.models import ScalingGroup
from backendai import services as manager_services
from backendai.actions import audited
from backendai.api import errors
from backendai.slots import ResourceSlot, SlotError, parse_binary_size
from sessions.models import ResourcePreset

NAME_MAX = 256
#: Stands for "leave as it is" in ``modify_preset`` (None means "clear" where a field may be empty).
UNCHANGED: Any = object()


def _refuse_unless_superadmin(actor) -> None:
    if not getattr(actor, "is_superadmin", False):
        raise errors.InsufficientPrivilege("Only superadmins may create, change or delete resource presets.")


def visible_presets(actor) -> QuerySet[ResourcePreset]:
    query = ResourcePreset.objects.select_related("scaling_group").order_by("name")
    if actor.is_superadmin:
        return query
    allowed = agent_services.allowed_scaling_groups(actor).values("pk")
    return query.filter(Q(scaling_group__isnull=True) | Q(scaling_group__in=allowed))


def get_preset(actor, name: str) -> ResourcePreset | None:
    return visible_presets(actor).filter(name=name).first()


# --- checking the fields ---------------------------------------------------------------------------

def clean_name(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise errors.InvalidAPIParameters("name: a non-empty preset name is required")
    name = value.strip()
    if len(name) > NAME_MAX:
        raise errors.InvalidAPIParameters(f"name: at most {NAME_MAX} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise errors.InvalidAPIParameters("name: control characters are not allowed")
    return name


def clean_slots(value, slot_types: dict | None = None) -> dict[str, str]:
    """The stored form of a preset's slots (see the module docstring)."""
    if not isinstance(value, dict):
        raise errors.InvalidAPIParameters("resource_slots: an object of slot amounts is required, "
                                          'e.g. {"cpu": "2", "mem": "4g"}')
    if not value:
        raise errors.InvalidAPIParameters("resource_slots: at least one slot must be above zero")
    slot_types = slot_types if slot_types is not None else manager_services.known_slot_types()
    unknown = sorted(str(name) for name in value if name not in slot_types)
    if unknown:
        raise errors.InvalidAPIParameters(f"resource_slots: unknown slot {unknown[0]!r}; known slots: "
                                          f"{', '.join(sorted(slot_types))}")
    try:
        parsed = ResourceSlot.from_json(value, slot_types)
    except SlotError as exc:
        raise errors.InvalidAPIParameters(f"resource_slots: {exc}") from None
    for slot, amount in parsed.items():
        if amount.is_infinite() or amount < 0:
            raise errors.InvalidAPIParameters(f"resource_slots: {slot} must be a finite amount of at least 0")
    kept = {slot: amount for slot, amount in parsed.items() if amount != 0}
    if not kept:
        raise errors.InvalidAPIParameters("resource_slots: at least one slot must be above zero")
    return ResourceSlot(kept).to_json()


def clean_shared_memory(value, resource_slots: dict[str, str]) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise errors.InvalidAPIParameters("shared_memory: a byte amount (e.g. \"64m\" or 67108864) is required")
    try:
        amount = parse_binary_size(value, "shared_memory")
    except SlotError as exc:
        raise errors.InvalidAPIParameters(f"shared_memory: {exc}") from None
    if amount.is_infinite() or amount < 0 or amount >= Decimal(2) ** 63:
        raise errors.InvalidAPIParameters("shared_memory: a finite byte amount is required")
    mem = resource_slots.get("mem")
    if mem is not None and amount >= Decimal(mem):
        raise errors.InvalidAPIParameters("shared_memory: must be less than the preset's memory (mem)")
    return int(amount)


def clean_scaling_group(value) -> ScalingGroup | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise errors.InvalidAPIParameters("scaling_group_name: a scaling group name is required")
    group = ScalingGroup.objects.filter(pk=value).first()
    if group is None:
        raise errors.InvalidAPIParameters(f"scaling_group_name: no scaling group {value[:64]!r}")
    return group


@dataclass
class PresetFields:
    name: str
    resource_slots: dict
    shared_memory: int | None
    scaling_group: ScalingGroup | None


def clean_fields(name, resource_slots, shared_memory=None, scaling_group=None, *, current: str | None = None,
                 slot_types: dict | None = None) -> PresetFields:
    """Every field checked (``current``: the name of the preset being changed, which may keep it)."""
    cleaned_name = clean_name(name)
    if cleaned_name != current and ResourcePreset.objects.filter(name=cleaned_name).exists():
        raise errors.InvalidAPIParameters(f"name: a resource preset named {cleaned_name!r} already exists")
    slots = clean_slots(resource_slots, slot_types)
    return PresetFields(cleaned_name, slots, clean_shared_memory(shared_memory, slots),
                        clean_scaling_group(scaling_group))


# --- changes ---------------------------------------------------------------------------------------

def _save(preset: ResourcePreset, fields: PresetFields) -> ResourcePreset:
    preset.name = fields.name
    preset.resource_slots = fields.resource_slots
    preset.shared_memory = fields.shared_memory
    preset.scaling_group = fields.scaling_group
    try:
        with transaction.atomic():  # a savepoint: a lost race on the name leaves the outer transaction usable
            preset.save()
    except IntegrityError:
        raise errors.InvalidAPIParameters(f"name: a resource preset named {fields.name!r} already exists") from None
    return preset


@audited("resource-preset", "create", "name")
def create_preset(actor, name, resource_slots, shared_memory=None, scaling_group=None) -> ResourcePreset:
    _refuse_unless_superadmin(actor)
    with transaction.atomic():
        fields = clean_fields(name, resource_slots, shared_memory, scaling_group)
        return _save(ResourcePreset(), fields)


def _locked(name) -> ResourcePreset:
    preset = ResourcePreset.objects.select_for_update().filter(name=name).first() if isinstance(name, str) else None
    if preset is None:
        raise errors.object_not_found("resource preset", f"No resource preset {str(name)[:64]!r}")
    return preset


@audited("resource-preset", "modify", "name")
def modify_preset(actor, name, *, new_name=UNCHANGED, resource_slots=UNCHANGED, shared_memory=UNCHANGED,
                  scaling_group=UNCHANGED) -> ResourcePreset:
    """Change the fields given (``UNCHANGED`` leaves one as it is; None clears the shared
    memory or the scaling group)."""
    _refuse_unless_superadmin(actor)
    with transaction.atomic():
        preset = _locked(name)
        given = {
            "name": preset.name if new_name in (UNCHANGED, None) else new_name,
            "resource_slots": preset.resource_slots if resource_slots in (UNCHANGED, None) else resource_slots,
            "shared_memory": preset.shared_memory if shared_memory is UNCHANGED else shared_memory,
            "scaling_group": preset.scaling_group_id if scaling_group is UNCHANGED else scaling_group,
        }
        fields = clean_fields(current=preset.name, **given)
        return _save(preset, fields)


@audited("resource-preset", "delete", "name")
def delete_preset(actor, name) -> None:
    _refuse_unless_superadmin(actor)
    with transaction.atomic():
        _locked(name).delete()

