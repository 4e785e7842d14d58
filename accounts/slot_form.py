"""Resource slots entered with units in the admin's forms, instead of a JSON text box.

A slot map such as ``{"cpu": "8", "mem": "34359738368", "cuda.device": "1"}`` is edited as
separate fields: CPU cores, memory with a unit (MiB, GiB, TiB), CUDA devices, CUDA shares,
and "other slots" (``name=amount`` pairs, for any other accelerator).  The form converts the
fields to the stored JSON (normalised by ``accounts.services.inputs.resource_slots``, the
GraphQL mutations' own check) and back; a bad value is shown beside its field.

``with_slot_fields(FormClass, {"total_resource_slots": "Total resource slots"})`` returns a
form class with those fields declared (the admin needs declared fields to lay them out) and
the JSON fields themselves left out of the rendered form.
"""
from __future__ import annotations

from decimal import Decimal

from django import forms

from accounts.services import inputs
from backendai.api import errors
from backendai.slots import INFINITY, SlotError, parse_binary_size, parse_count, slot_type_of

MEM_UNITS = [("MiB", "MiB"), ("GiB", "GiB"), ("TiB", "TiB")]
UNIT_BYTES = {"MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
#: the slots with a field of their own: (key, suffix of the form field, label, decimal places)
KNOWN = [("cpu", "cpu", "CPU cores", 3), ("cuda.device", "cuda_device", "CUDA GPUs (cuda.device)", 0),
         ("cuda.shares", "cuda_shares", "CUDA fractional GPUs (cuda.shares)", 3)]
OTHER_HELP = 'Any other slot as name=amount, comma separated, e.g. "rocm.device=2, cuda.mem=16g".'
MAX_AMOUNT = Decimal("1e15")


def _amount_field(label: str, places: int) -> forms.DecimalField:
    return forms.DecimalField(label=label, required=False, min_value=0, max_value=MAX_AMOUNT, decimal_places=places,
                              max_digits=18 + places)


def slot_fields(name: str, label: str) -> dict[str, forms.Field]:
    """The declared fields that edit the slot map stored in the model field ``name``."""
    fields: dict[str, forms.Field] = {}
    fields[f"{name}_cpu"] = _amount_field(f"{label}: CPU cores", 3)
    fields[f"{name}_mem"] = forms.DecimalField(label=f"{label}: memory", required=False, min_value=0,
                                               max_value=MAX_AMOUNT, decimal_places=3, max_digits=21)
    fields[f"{name}_mem_unit"] = forms.ChoiceField(label=f"{label}: memory unit", choices=MEM_UNITS, initial="GiB",
                                                   required=False)
    for _key, suffix, text, places in KNOWN[1:]:
        fields[f"{name}_{suffix}"] = _amount_field(f"{label}: {text}", places)
    fields[f"{name}_other"] = forms.CharField(label=f"{label}: other slots", required=False, max_length=1000,
                                              help_text=OTHER_HELP)
    return fields


def field_names(name: str) -> list[str]:
    return [f"{name}_cpu", f"{name}_mem", f"{name}_mem_unit", *(f"{name}_{s}" for _k, s, _t, _p in KNOWN[1:]),
            f"{name}_other"]


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def initial_from_slots(name: str, slots: dict | None) -> dict:
    """The fields' initial values for a stored slot map (the reverse of ``slots_from_data``)."""
    initial: dict = {f"{name}_mem_unit": "GiB"}
    other = []
    for key, value in (slots or {}).items():
        try:
            amount = (parse_binary_size(value, key) if slot_type_of(key) == "bytes" else parse_count(value, key))
        except SlotError:
            other.append(f"{key}={value}")
            continue
        known = next((suffix for k, suffix, _t, _p in KNOWN if k == key), None)
        if amount == INFINITY:
            other.append(f"{key}=Infinity")
        elif key == "mem":
            if amount % UNIT_BYTES["MiB"]:
                number, unit = amount / UNIT_BYTES["MiB"], "MiB"
                number = number.quantize(Decimal("0.001"))
            else:
                unit = "TiB" if amount and amount % UNIT_BYTES["TiB"] == 0 else (
                    "GiB" if amount % UNIT_BYTES["GiB"] == 0 else "MiB")
                number = amount / UNIT_BYTES[unit]
            initial[f"{name}_mem"] = Decimal(_plain(number))
            initial[f"{name}_mem_unit"] = unit
        elif known is not None:
            initial[f"{name}_{known}"] = Decimal(_plain(amount))
        else:
            other.append(f"{key}={_format_other(key, amount)}")
    initial[f"{name}_other"] = ", ".join(other)
    return initial


def _format_other(key: str, amount: Decimal) -> str:
    if slot_type_of(key) == "bytes":
        number, unit = (amount / UNIT_BYTES["GiB"], "g") if amount % UNIT_BYTES["GiB"] == 0 else (amount, "")
        return f"{_plain(Decimal(number))}{unit}"
    return _plain(amount)


class SlotFieldsMixin:
    """Fills the slot fields from the instance and writes the assembled map back on clean."""

    #: {model field: label}
    slot_groups: dict[str, str] = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.slot_groups:
            if self.instance is not None and self.instance.pk is not None:
                for field, value in initial_from_slots(name, getattr(self.instance, name)).items():
                    self.initial.setdefault(field, value)

    def clean(self):
        # assembled first, so that the base form's own clean() sees the slot maps
        data = self.cleaned_data
        for name in self.slot_groups:
            slots = self._slots_from_data(name, data)
            if slots is not None:
                data[name] = slots
                setattr(self.instance, name, slots)
        return super().clean()

    def _slots_from_data(self, name: str, data: dict) -> dict | None:
        if any(f in self.errors for f in field_names(name)):
            return None
        raw: dict[str, str] = {}
        for key, suffix, _text, _places in KNOWN:
            value = data.get(f"{name}_{suffix}")
            if value is not None:
                raw[key] = _plain(value)
        mem = data.get(f"{name}_mem")
        if mem is not None:
            unit = data.get(f"{name}_mem_unit") or "GiB"
            raw["mem"] = str(int(mem * UNIT_BYTES[unit]))
        other = (data.get(f"{name}_other") or "").strip()
        if other:
            for part in other.split(","):
                if not part.strip():
                    continue
                key, sep, value = part.partition("=")
                key, value = key.strip(), value.strip()
                if not sep or not key or not value:
                    self.add_error(f"{name}_other", f"{part.strip()!r} is not name=amount.")
                    return None
                if key in raw:
                    self.add_error(f"{name}_other", f"{key} is given twice.")
                    return None
                raw[key] = value
        try:
            return inputs.resource_slots(name, raw)
        except errors.BackendAIError as exc:
            message = str(exc.msg or exc.error_title)
            self.add_error(field_for_message(name, message), message)
            return None


def field_for_message(name: str, message: str) -> str:
    text = message.split(":", 1)[-1]
    if "'cpu'" in text:
        return f"{name}_cpu"
    if "'mem'" in text:
        return f"{name}_mem"
    for key, suffix, _t, _p in KNOWN:
        if f"'{key}'" in text:
            return f"{name}_{suffix}"
    return f"{name}_other"


def with_slot_fields(base: type[forms.ModelForm], groups: dict[str, str]) -> type[forms.ModelForm]:
    """``base`` with the slot fields of each ``groups`` entry declared, and the JSON fields excluded."""
    attrs: dict = {"slot_groups": dict(groups), "__module__": base.__module__}
    for name, label in groups.items():
        attrs.update(slot_fields(name, label))
    meta_attrs = {"model": base._meta.model, "exclude": list(groups)}
    attrs["Meta"] = type("Meta", (), meta_attrs)
    return type(base.__name__, (SlotFieldsMixin, base), attrs)
