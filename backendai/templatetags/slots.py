"""Template filters for resource slots: ``{{ slots|slots }}`` -> "cpu 4 · mem 8 GiB"."""
from django import template

from backendai.slots import ResourceSlot, humanize_binary_size

register = template.Library()


@register.filter(name="slots")
def slots_filter(value) -> str:
    if not value:
        return "—"
    data = value if isinstance(value, ResourceSlot) else ResourceSlot.from_json(value)
    parts = []
    for name in sorted(data):
        amount = data[name]
        if name == "mem" or name.endswith(".mem"):
            parts.append(f"{name} {humanize_binary_size(amount)}")
        else:
            parts.append(f"{name} {amount.normalize() if amount == amount.to_integral() else amount}")
    return " · ".join(parts)
