"""Resource slots: the quantities a compute session asks for and an agent offers.

A resource slot maps slot names to non-negative ``Decimal`` amounts, e.g.
``{"cpu": 2, "mem": 4294967296, "cuda.shares": 0.5}``.  The intrinsic slots are
``cpu`` (a count) and ``mem`` (bytes); accelerator plugins add their own, such as
``cuda.device`` (count), ``cuda.shares`` (fractional count) or MIG-like
``cuda.device:1g.5gb-mig`` (type ``unique``).

On the wire every amount is a JSON string: counts are quantized to three decimal
places and printed without trailing zeros (``"1"``, ``"0.5"``), byte amounts are
integers, and an unlimited amount is ``"Infinity"``.  User input may spell byte
amounts as binary sizes (``"4g"``, ``"1.5GiB"``, ``"512mb"``).

This module is deliberately stdlib-only so it can be used (and tested) outside
Django.  All malformed input raises :class:`SlotError`, a ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

__all__ = [
    "INFINITY", "INTRINSIC_SLOTS", "LIMITED", "SLOT_TYPES", "UNLIMITED", "ResourceSlot",
    "SlotError", "fits", "format_binary_size", "humanize_binary_size", "parse_binary_size",
    "parse_count", "slot_type_of",
]

INTRINSIC_SLOTS: dict[str, str] = {"cpu": "count", "mem": "bytes"}
SLOT_TYPES: tuple[str, ...] = ("count", "bytes", "unique")
LIMITED = "LIMITED"
UNLIMITED = "UNLIMITED"
INFINITY = Decimal("Infinity")

_ZERO = Decimal(0)
_COUNT_QUANTUM = Decimal("0.001")
# Plenty of precision so that huge byte counts never get rounded silently.
_CTX = Context(prec=80, rounding=ROUND_HALF_UP)
_UNITS = "kmgtpezy"
_INF_WORDS = frozenset({"inf", "infinite", "infinity"})
_SIZE_RE = re.compile(r"(?P<num>\d+(?:\.\d+)?)(?:(?P<unit>[kmgtpezy])(?:i?b|i?bytes)?|b|bytes)?")
_COUNT_RE = re.compile(r"\d+(?:\.\d+)?")
_SLOT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*")


class SlotError(ValueError):
    """Raised for malformed slot names, amounts, sizes or policies."""


def _fail(slot: str | None, value: Any, reason: str) -> SlotError:
    where = f"slot {slot!r}: " if slot is not None else ""
    return SlotError(f"{where}{reason}: {value!r}")


def _to_decimal(value: Any, slot: str | None) -> Decimal:
    """Turn a number or plain numeric string into a Decimal; no range checks."""
    if isinstance(value, bool) or value is None:
        raise _fail(slot, value, "expected a number")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, (int, float)):
        result = Decimal(str(value))  # str() avoids binary float artefacts
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise _fail(slot, value, "expected a number") from None
    else:
        raise _fail(slot, value, "expected a number")
    if result.is_nan():
        raise _fail(slot, value, "NaN is not a valid amount")
    return result


def _check_non_negative(result: Decimal, slot: str | None, value: Any) -> Decimal:
    if result < 0:
        raise _fail(slot, value, "amount must not be negative")
    return _ZERO if result == 0 else result  # drop any "-0"


def parse_count(value: Any, slot: str | None = None) -> Decimal:
    """Parse a count (``"2"``, ``0.5``, ``"Infinity"``), quantized to 3 places."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _INF_WORDS:
            return INFINITY
        if not _COUNT_RE.fullmatch(text):
            raise _fail(slot, value, "invalid number")
        result = Decimal(text)
    else:
        result = _check_non_negative(_to_decimal(value, slot), slot, value)
    if result.is_infinite():
        return INFINITY
    result = result.quantize(_COUNT_QUANTUM, rounding=ROUND_HALF_UP, context=_CTX)
    return _ZERO if result == 0 else result


def parse_binary_size(value: Any, slot: str | None = None) -> Decimal:
    """Parse a byte amount such as ``4g``, ``1.5GiB``, ``512mb``, ``1024`` or ``inf``.

    Suffixes are powers of 1024; fractions need a suffix and are rounded down to
    whole bytes.
    """
    if isinstance(value, str):
        text = value.strip().lower().replace("_", "")
        if text in _INF_WORDS:
            return INFINITY
        match = _SIZE_RE.fullmatch(text)
        if match is None:
            raise _fail(slot, value, "invalid binary size")
        num, unit = match["num"], match["unit"]
        if unit is None and "." in num:
            raise _fail(slot, value, "fractional sizes need a unit suffix")
        exponent = _UNITS.index(unit) + 1 if unit else 0
        result = _CTX.multiply(Decimal(num), Decimal(1024) ** exponent)
        return result.to_integral_value(rounding=ROUND_FLOOR, context=_CTX)
    result = _check_non_negative(_to_decimal(value, slot), slot, value)
    if result.is_infinite():
        return INFINITY
    if result != result.to_integral_value():
        raise _fail(slot, value, "byte amounts must be whole numbers")
    return result.to_integral_value()


def format_binary_size(value: Any) -> str:
    """Compact form using the largest unit that divides exactly (``"4g"``, ``"1536m"``)."""
    size = parse_binary_size(value)
    if size.is_infinite():
        return "inf"
    n = int(size)
    for exponent in range(len(_UNITS), 0, -1):
        step = 1024**exponent
        if n and n % step == 0:
            return f"{n // step}{_UNITS[exponent - 1]}"
    return str(n)


def humanize_binary_size(value: Any) -> str:
    """Human-readable form with IEC units and up to two decimals (``"1.5 GiB"``)."""
    size = parse_binary_size(value)
    if size.is_infinite():
        return "inf"
    exponent = 0
    while exponent < len(_UNITS) and size >= Decimal(1024) ** (exponent + 1):
        exponent += 1
    if exponent == 0:
        return f"{int(size)} B"
    scaled = _CTX.divide(size, Decimal(1024) ** exponent)
    scaled = scaled.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP, context=_CTX)
    return f"{_format_decimal(scaled)} {_UNITS[exponent - 1].upper()}iB"


def _format_decimal(value: Decimal) -> str:
    if value.is_infinite():
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    return format(value.normalize(context=_CTX), "f")


def slot_type_of(name: str, slot_types: Mapping[str, str] | None = None) -> str:
    """The type of a slot: as declared, else ``bytes`` for ``mem``/``*.mem``, else ``count``."""
    types = INTRINSIC_SLOTS if slot_types is None else slot_types
    declared = types.get(name)
    if declared is not None:
        if declared not in SLOT_TYPES:
            raise _fail(name, declared, "unknown slot type")
        return declared
    return "bytes" if name == "mem" or name.endswith(".mem") else "count"


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _SLOT_NAME_RE.fullmatch(name):
        raise SlotError(f"invalid slot name: {name!r}")
    return name


def _parse_amount(name: str, value: Any, slot_types: Mapping[str, str] | None) -> Decimal:
    if slot_type_of(name, slot_types) == "bytes":
        return parse_binary_size(value, name)
    return parse_count(value, name)


def _coerce(other: Any) -> ResourceSlot | None:
    if isinstance(other, ResourceSlot):
        return other
    if isinstance(other, Mapping):
        return ResourceSlot(other)
    return None


class ResourceSlot(Mapping[str, Decimal]):
    """An immutable mapping of slot name to Decimal amount.

    Keys missing on one side of an operation count as zero.  The constructor
    only coerces numbers (negatives allowed, e.g. for "remaining" amounts); use
    :meth:`from_json` or :meth:`from_user_input` for untrusted input.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        items = data.items() if isinstance(data, Mapping) else data
        self._data: dict[str, Decimal] = {_check_name(k): _to_decimal(v, k) for k, v in items}

    # -- Mapping protocol ---------------------------------------------------
    def __getitem__(self, key: str) -> Decimal:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"ResourceSlot({self._data!r})"

    # -- construction -------------------------------------------------------
    @classmethod
    def from_json(
        cls, mapping: Mapping[str, Any] | None, slot_types: Mapping[str, str] | None = None
    ) -> ResourceSlot:
        """Parse stored/wire JSON; byte slots accept binary sizes."""
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise SlotError(f"resource slots must be an object, got {mapping!r}")
        return cls((_check_name(k), _parse_amount(k, v, slot_types)) for k, v in mapping.items())

    @classmethod
    def from_user_input(
        cls, mapping: Mapping[str, Any], known_slot_types: Mapping[str, str]
    ) -> ResourceSlot:
        """Parse a user's request: zero values dropped, unknown slots rejected,
        and every known slot present (missing ones as 0)."""
        if not isinstance(mapping, Mapping):
            raise SlotError(f"resource request must be an object, got {mapping!r}")
        parsed: dict[str, Decimal] = {}
        for name, value in mapping.items():
            _check_name(name)
            if name == "shmem":
                raise SlotError("'shmem' is not a resource slot; put it in resource_opts instead")
            if name not in known_slot_types:
                if _is_zero_input(value):
                    continue
                raise SlotError(
                    f"unknown resource slot {name!r}; known slots: "
                    f"{', '.join(sorted(known_slot_types))}"
                )
            amount = _parse_amount(name, value, known_slot_types)
            if amount != 0:
                parsed[name] = amount
        return cls({name: parsed.get(name, _ZERO) for name in known_slot_types})

    @classmethod
    def from_policy(
        cls,
        total_resource_slots: Mapping[str, Any] | None,
        default_for_unspecified: Any,
        known_slot_types: Mapping[str, str],
    ) -> ResourceSlot:
        """A keypair/project policy limit; unlisted known slots become 0 (LIMITED)
        or Infinity (UNLIMITED)."""
        mode = getattr(default_for_unspecified, "value", default_for_unspecified)
        if mode == LIMITED:
            fill = _ZERO
        elif mode == UNLIMITED:
            fill = INFINITY
        else:
            raise SlotError(
                f"default_for_unspecified must be {LIMITED!r} or {UNLIMITED!r}, "
                f"got {default_for_unspecified!r}"
            )
        listed = cls.from_json(total_resource_slots, known_slot_types)
        return cls({name: fill for name in known_slot_types} | listed._data)

    # -- serialisation ------------------------------------------------------
    def to_json(self) -> dict[str, str]:
        return {k: _format_decimal(v) for k, v in self._data.items()}

    # -- arithmetic ---------------------------------------------------------
    def _keys_with(self, other: ResourceSlot) -> list[str]:
        return list(self._data) + [k for k in other._data if k not in self._data]

    def __add__(self, other: Any) -> ResourceSlot:
        rhs = _coerce(other)
        if rhs is None:
            return NotImplemented
        return ResourceSlot(
            (k, _CTX.add(self.get(k, _ZERO), rhs.get(k, _ZERO))) for k in self._keys_with(rhs)
        )

    def __radd__(self, other: Any) -> ResourceSlot:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self  # lets sum() work without a start value
        rhs = _coerce(other)
        return NotImplemented if rhs is None else rhs + self

    def __sub__(self, other: Any) -> ResourceSlot:
        rhs = _coerce(other)
        if rhs is None:
            return NotImplemented
        result: dict[str, Decimal] = {}
        for k in self._keys_with(rhs):
            a, b = self.get(k, _ZERO), rhs.get(k, _ZERO)
            if a.is_infinite() and b.is_infinite() and a.is_signed() == b.is_signed():
                raise SlotError(f"slot {k!r}: cannot subtract Infinity from Infinity")
            result[k] = _CTX.subtract(a, b)
        return ResourceSlot(result)

    def scale(self, n: int) -> ResourceSlot:
        """Multiply every amount by a non-negative integer (e.g. a cluster size)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise SlotError(f"scale factor must be a non-negative integer, got {n!r}")
        return ResourceSlot(
            (k, _ZERO if n == 0 else _CTX.multiply(v, Decimal(n))) for k, v in self._data.items()
        )

    @staticmethod
    def minimum(a: Mapping[str, Any], b: Mapping[str, Any]) -> ResourceSlot:
        """Elementwise minimum over the union of keys (missing counts as 0)."""
        lhs, rhs = ResourceSlot(a), ResourceSlot(b)
        return ResourceSlot(
            (k, min(lhs.get(k, _ZERO), rhs.get(k, _ZERO))) for k in lhs._keys_with(rhs)
        )

    def is_zero(self) -> bool:
        return all(v == 0 for v in self._data.values())

    def drop_zeros(self) -> ResourceSlot:
        return ResourceSlot((k, v) for k, v in self._data.items() if v != 0)

    # -- comparison ---------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        try:
            rhs = _coerce(other)
        except SlotError:  # a mapping of non-numbers is simply not equal
            return False
        if rhs is None:
            return NotImplemented
        return all(self.get(k, _ZERO) == rhs.get(k, _ZERO) for k in self._keys_with(rhs))

    def __hash__(self) -> int:
        return hash(frozenset((k, v) for k, v in self._data.items() if v != 0))

    def __le__(self, other: Any) -> bool:
        """True iff no slot (of either side) exceeds the other's amount."""
        rhs = _coerce(other)
        if rhs is None:
            return NotImplemented
        return not any(self.get(k, _ZERO) > rhs.get(k, _ZERO) for k in self._keys_with(rhs))

    def __ge__(self, other: Any) -> bool:
        """True iff every slot named by ``other`` is covered by this one."""
        rhs = _coerce(other)
        if rhs is None:
            return NotImplemented
        return all(self.get(k, _ZERO) >= v for k, v in rhs._data.items())


def _is_zero_input(value: Any) -> bool:
    """Whether a raw user value means zero (0, "0", "0g", ...)."""
    for parse in (parse_count, parse_binary_size):
        try:
            return parse(value) == 0
        except SlotError:
            continue
    return False


def fits(request: Mapping[str, Any], capacity: Mapping[str, Any]) -> bool:
    """Whether ``request`` can be served from ``capacity`` (``request <= capacity``)."""
    return ResourceSlot(request) <= ResourceSlot(capacity)
