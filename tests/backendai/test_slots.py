"""Unit tests for backendai.slots (pure Python: no Django, no database)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from backendai.slots import (
    INFINITY,
    INTRINSIC_SLOTS,
    LIMITED,
    UNLIMITED,
    ResourceSlot,
    SlotError,
    fits,
    format_binary_size,
    humanize_binary_size,
    parse_binary_size,
    parse_count,
    slot_type_of,
)

GPU_SLOTS = {
    "cpu": "count",
    "mem": "bytes",
    "cuda.device": "count",
    "cuda.shares": "count",
    "cuda.device:1g.5gb-mig": "unique",
}
GiB = 1024**3
MiB = 1024**2


def rs(**kwargs: object) -> ResourceSlot:
    """Build a slot from keyword arguments, with '__' standing in for '.'."""
    return ResourceSlot({k.replace("__", "."): v for k, v in kwargs.items()})


# --- binary sizes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4g", 4 * GiB),
        ("4G", 4 * GiB),
        ("4GiB", 4 * GiB),
        ("4gb", 4 * GiB),
        ("4gibytes", 4 * GiB),
        ("4gbytes", 4 * GiB),
        ("1.5GiB", 1536 * MiB),
        ("1.5g", 1536 * MiB),
        ("512mb", 512 * MiB),
        ("512m", 512 * MiB),
        ("1k", 1024),
        ("2t", 2 * 1024**4),
        ("1p", 1024**5),
        ("1e", 1024**6),
        ("1z", 1024**7),
        ("1y", 1024**8),
        ("1024", 1024),
        ("1024b", 1024),
        ("1024bytes", 1024),
        ("0", 0),
        ("1_000_000", 1_000_000),
        ("4_g", 4 * GiB),
        ("  4g  ", 4 * GiB),
    ],
)
def test_it_parses_binary_sizes_with_suffixes(text: str, expected: int) -> None:
    result = parse_binary_size(text)
    assert result == expected
    assert isinstance(result, Decimal)


def test_it_parses_gigabytes_with_iec_suffix() -> None:
    assert parse_binary_size("4GiB") == Decimal(4294967296)


def test_it_rounds_fractional_sizes_down_to_whole_bytes() -> None:
    assert parse_binary_size("1.0001k") == 1024  # 1024.1024 bytes
    assert parse_binary_size("0.5k") == 512
    assert parse_binary_size("1.9999999999k") == 2047


@pytest.mark.parametrize("value", [0, 1, 1024, 10**30, Decimal("2048"), 1024.0])
def test_it_accepts_whole_numbers_as_binary_sizes(value: object) -> None:
    assert parse_binary_size(value) == Decimal(str(value))


def test_it_does_not_lose_precision_on_huge_sizes() -> None:
    assert parse_binary_size("123456789012345678901234567890y") == (
        123456789012345678901234567890 * 1024**8
    )


@pytest.mark.parametrize("text", ["inf", "INF", "infinite", "Infinity", "infinity"])
def test_it_parses_infinite_binary_sizes(text: str) -> None:
    assert parse_binary_size(text) == INFINITY


def test_it_accepts_decimal_infinity_as_a_binary_size() -> None:
    assert parse_binary_size(Decimal("Infinity")) == INFINITY


@pytest.mark.parametrize(
    "value",
    [
        "1.5", "1.5b", "-1", "-1g", "--1", "", "   ", "g", "4x", "1e3g", "1e3", "4gg",
        "4 g x", "0x10", ".5g", "1.g", "4ib", "+4g", "nan", "-inf", "4kibibytes",
        None, True, False, -1, 1.5, Decimal("1.5"), Decimal("NaN"), float("nan"),
        Decimal("-Infinity"), float("-inf"), [], {}, object(),
    ],
)
def test_it_rejects_malformed_binary_sizes(value: object) -> None:
    with pytest.raises(SlotError):
        parse_binary_size(value)


def test_it_raises_a_value_error_subclass_for_bad_sizes() -> None:
    assert issubclass(SlotError, ValueError)
    with pytest.raises(ValueError, match="4x"):
        parse_binary_size("4x")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4g", "4g"),
        ("1.5g", "1536m"),
        (0, "0"),
        (1000, "1000"),
        (1024, "1k"),
        (1025, "1025"),
        (3 * 1024**8, "3y"),
        (1024**9, "1024y"),
        (INFINITY, "inf"),
        ("inf", "inf"),
    ],
)
def test_it_formats_binary_sizes_compactly(value: object, expected: str) -> None:
    assert format_binary_size(value) == expected


@pytest.mark.parametrize("value", [0, 1, 1000, 1024, 1536 * MiB, 4 * GiB, 7 * 1024**5 + 1])
def test_it_round_trips_binary_sizes_through_the_compact_format(value: int) -> None:
    assert parse_binary_size(format_binary_size(value)) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (4 * GiB, "4 GiB"),
        ("1.5g", "1.5 GiB"),
        (512 * MiB, "512 MiB"),
        (1000, "1000 B"),
        (0, "0 B"),
        (1024, "1 KiB"),
        (1023, "1023 B"),
        (int(1.25 * GiB), "1.25 GiB"),
        (2 * 1024**4, "2 TiB"),
        (INFINITY, "inf"),
    ],
)
def test_it_humanizes_binary_sizes(value: object, expected: str) -> None:
    assert humanize_binary_size(value) == expected


# --- counts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", Decimal("2")),
        ("0.5", Decimal("0.5")),
        (0.1, Decimal("0.1")),
        (3, Decimal(3)),
        ("0.3333", Decimal("0.333")),
        ("1.0005", Decimal("1.001")),
        (Decimal("0.0004"), Decimal(0)),
        ("Infinity", INFINITY),
        ("inf", INFINITY),
        (float("inf"), INFINITY),
    ],
)
def test_it_parses_and_quantizes_counts_to_three_places(value: object, expected: Decimal) -> None:
    assert parse_count(value) == expected


@pytest.mark.parametrize(
    "value",
    [True, False, None, "NaN", float("nan"), Decimal("NaN"), "-1", -1, -0.5, "abc", "",
     "1,5", "1e3", "-Infinity", float("-inf"), [1]],
)
def test_it_rejects_malformed_counts(value: object) -> None:
    with pytest.raises(SlotError):
        parse_count(value)


def test_it_avoids_float_rounding_surprises() -> None:
    slot = ResourceSlot.from_json({"cpu": 0.1})
    assert slot["cpu"] == Decimal("0.1")
    assert (ResourceSlot({"cpu": 0.1}) + ResourceSlot({"cpu": 0.2}))["cpu"] == Decimal("0.3")


# --- slot types ---------------------------------------------------------------


def test_it_exposes_the_intrinsic_slots() -> None:
    assert INTRINSIC_SLOTS == {"cpu": "count", "mem": "bytes"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cpu", "count"),
        ("mem", "bytes"),
        ("cuda.mem", "bytes"),
        ("cuda.device", "count"),
        ("cuda.shares", "count"),
        ("cuda.device:1g.5gb-mig", "unique"),
    ],
)
def test_it_determines_slot_types(name: str, expected: str) -> None:
    assert slot_type_of(name, GPU_SLOTS) == expected


def test_it_rejects_unknown_slot_type_declarations() -> None:
    with pytest.raises(SlotError, match="bogus"):
        slot_type_of("x", {"x": "bogus"})


# --- JSON ---------------------------------------------------------------------


def test_it_parses_json_with_mixed_value_types() -> None:
    slot = ResourceSlot.from_json(
        {"cpu": "2", "mem": "4g", "cuda.shares": 0.5, "cuda.device": Decimal(1)}, GPU_SLOTS
    )
    assert dict(slot) == {
        "cpu": Decimal(2),
        "mem": Decimal(4 * GiB),
        "cuda.shares": Decimal("0.5"),
        "cuda.device": Decimal(1),
    }


def test_it_serialises_values_as_compact_strings() -> None:
    slot = ResourceSlot.from_json({"cpu": "1.000", "mem": 4 * GiB, "cuda.shares": "0.50"})
    assert slot.to_json() == {"cpu": "1", "mem": "4294967296", "cuda.shares": "0.5"}


def test_it_serialises_large_whole_counts_without_exponents() -> None:
    assert ResourceSlot.from_json({"cpu": "1000"}).to_json() == {"cpu": "1000"}


def test_it_quantizes_counts_to_three_places_in_json() -> None:
    assert ResourceSlot.from_json({"cpu": "0.12345"}).to_json() == {"cpu": "0.123"}


def test_it_round_trips_json_with_infinity() -> None:
    slot = ResourceSlot.from_json({"cpu": "Infinity", "mem": "inf", "cuda.shares": "2.5"})
    wire = json.loads(json.dumps(slot.to_json()))
    assert wire == {"cpu": "Infinity", "mem": "Infinity", "cuda.shares": "2.5"}
    assert ResourceSlot.from_json(wire) == slot


def test_it_treats_dot_mem_slots_as_bytes_even_if_undeclared() -> None:
    assert ResourceSlot.from_json({"cuda.mem": "1g"})["cuda.mem"] == GiB


def test_it_treats_null_json_as_an_empty_slot() -> None:
    assert ResourceSlot.from_json(None) == ResourceSlot()


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"cpu": True}, "cpu"),
        ({"cpu": "NaN"}, "cpu"),
        ({"cpu": float("nan")}, "cpu"),
        ({"cpu": "-1"}, "cpu"),
        ({"mem": "-1g"}, "mem"),
        ({"mem": "4x"}, "4x"),
        ({"mem": "1.5"}, "mem"),
        ({"cuda.shares": None}, "cuda.shares"),
        ({"cpu": "two"}, "two"),
        ({"": 1}, "slot name"),
        ({1: 1}, "slot name"),
    ],
)
def test_it_rejects_malformed_json_naming_the_slot_and_value(payload: dict, fragment: str) -> None:
    with pytest.raises(SlotError, match=fragment):
        ResourceSlot.from_json(payload)


def test_it_rejects_json_that_is_not_an_object() -> None:
    with pytest.raises(SlotError):
        ResourceSlot.from_json(["cpu", 1])  # type: ignore[arg-type]


# --- mapping behaviour --------------------------------------------------------


def test_it_behaves_like_a_read_only_mapping() -> None:
    slot = rs(cpu=1, mem=2)
    assert len(slot) == 2
    assert set(slot) == {"cpu", "mem"}
    assert slot.get("cuda.device") is None
    assert "cpu" in slot
    with pytest.raises(TypeError):
        slot["cpu"] = Decimal(3)  # type: ignore[index]


def test_it_is_hashable_consistently_with_equality() -> None:
    assert hash(rs(cpu=1)) == hash(rs(cpu=Decimal("1.000"), mem=0))
    assert len({rs(cpu=1), rs(cpu=Decimal("1.0"), mem=0)}) == 1


# --- arithmetic ---------------------------------------------------------------


def test_it_adds_slots_treating_missing_keys_as_zero() -> None:
    total = rs(cpu=1, mem=GiB) + rs(cpu=2, cuda__device=1)
    assert dict(total) == {"cpu": 3, "mem": GiB, "cuda.device": 1}


def test_it_subtracts_slots_and_may_go_negative() -> None:
    remaining = rs(cpu=2, mem=GiB) - rs(cpu=3, cuda__shares="0.5")
    assert dict(remaining) == {"cpu": -1, "mem": GiB, "cuda.shares": Decimal("-0.5")}


def test_it_keeps_infinity_when_subtracting_finite_amounts() -> None:
    remaining = rs(cpu=INFINITY, mem=INFINITY) - rs(cpu=4, mem=GiB)
    assert dict(remaining) == {"cpu": INFINITY, "mem": INFINITY}
    assert (rs(cpu=INFINITY) + rs(cpu=1))["cpu"] == INFINITY


def test_it_refuses_to_subtract_infinity_from_infinity() -> None:
    with pytest.raises(SlotError, match="cpu"):
        rs(cpu=INFINITY) - rs(cpu=INFINITY)


def test_it_accepts_plain_dicts_in_arithmetic() -> None:
    assert rs(cpu=1) + {"cpu": 1} == rs(cpu=2)
    assert rs(cpu=3) - {"cpu": 1} == rs(cpu=2)
    assert {"cpu": 1} + rs(cpu=1) == rs(cpu=2)


def test_it_can_be_summed() -> None:
    assert sum([rs(cpu=1), rs(cpu=2, mem=5)]) == rs(cpu=3, mem=5)


def test_it_scales_by_a_cluster_size() -> None:
    assert rs(cpu="0.5", mem=GiB, cuda__device=INFINITY).scale(3) == rs(
        cpu="1.5", mem=3 * GiB, cuda__device=INFINITY
    )
    assert rs(cpu=INFINITY).scale(0) == rs(cpu=0)


@pytest.mark.parametrize("factor", [-1, 1.5, True, "2"])
def test_it_rejects_bad_scale_factors(factor: object) -> None:
    with pytest.raises(SlotError):
        rs(cpu=1).scale(factor)  # type: ignore[arg-type]


def test_it_takes_the_elementwise_minimum_over_the_union_of_keys() -> None:
    result = ResourceSlot.minimum(rs(cpu=4, mem=INFINITY), rs(cpu=2, mem=GiB, cuda__device=1))
    assert dict(result) == {"cpu": 2, "mem": GiB, "cuda.device": 0}


def test_it_knows_when_it_is_zero() -> None:
    assert ResourceSlot().is_zero()
    assert rs(cpu=0, mem=0).is_zero()
    assert not rs(cpu=0, mem=1).is_zero()


def test_it_drops_zero_entries() -> None:
    assert dict(rs(cpu=0, mem=GiB, cuda__device=0).drop_zeros()) == {"mem": GiB}


# --- comparison ---------------------------------------------------------------


def test_it_compares_equal_by_value_treating_missing_keys_as_zero() -> None:
    assert rs(cpu=1, mem=0) == rs(cpu="1.000")
    assert rs(cpu=1) == {"cpu": 1, "cuda.device": 0}
    assert rs(cpu=1) != rs(cpu=2)
    assert rs(cpu=1) != rs(cpu=1, mem=1)
    assert rs(cpu=1) != "cpu"


def test_it_is_less_or_equal_when_no_key_exceeds_the_other() -> None:
    assert rs(cpu=1, mem=GiB) <= rs(cpu=2, mem=GiB)
    assert rs(cpu=1) <= rs(cpu=1, mem=GiB)
    assert not rs(cpu=1, mem=1) <= rs(cpu=4)
    assert not rs(cpu=3) <= rs(cpu=2, mem=INFINITY)
    assert rs(cpu=1000, mem=10**30) <= rs(cpu=INFINITY, mem=INFINITY)


def test_it_is_greater_or_equal_when_every_key_of_the_other_is_covered() -> None:
    assert rs(cpu=2, mem=GiB) >= rs(cpu=2)
    assert not rs(cpu=2) >= rs(cpu=2, mem=1)
    assert rs(cpu=2) >= rs(cpu=2, mem=0)


def test_it_keeps_the_asymmetry_between_le_and_ge() -> None:
    # a >= b only checks b's keys; b <= a checks both sides' keys.
    a, b = rs(cpu=2, mem=-1), rs(cpu=1)
    assert a >= b
    assert not b <= a


def test_it_does_not_support_strict_ordering() -> None:
    with pytest.raises(TypeError):
        rs(cpu=1) < rs(cpu=2)  # noqa: B015


@pytest.mark.parametrize(
    ("request_", "capacity", "expected"),
    [
        ({"cpu": 1, "mem": GiB}, {"cpu": 2, "mem": 2 * GiB}, True),
        ({"cpu": 2, "mem": GiB}, {"cpu": 2, "mem": GiB}, True),
        ({"cpu": 3}, {"cpu": 2, "mem": GiB}, False),
        ({"cuda.device": 1}, {"cpu": 8}, False),
        ({"cuda.device": 0, "cpu": 1}, {"cpu": 8}, True),
        ({"cpu": 64}, {"cpu": INFINITY}, True),
        ({}, {}, True),
    ],
)
def test_it_fits_a_request_into_capacity(request_: dict, capacity: dict, expected: bool) -> None:
    assert fits(request_, capacity) is expected
    assert fits(ResourceSlot(request_), ResourceSlot(capacity)) is expected


# --- policies -----------------------------------------------------------------


def test_it_fills_unlisted_known_slots_with_zero_when_limited() -> None:
    policy = ResourceSlot.from_policy({"cpu": "4", "mem": "8g"}, LIMITED, GPU_SLOTS)
    assert dict(policy) == {
        "cpu": 4,
        "mem": 8 * GiB,
        "cuda.device": 0,
        "cuda.shares": 0,
        "cuda.device:1g.5gb-mig": 0,
    }


def test_it_fills_unlisted_known_slots_with_infinity_when_unlimited() -> None:
    policy = ResourceSlot.from_policy({"cpu": "4"}, UNLIMITED, GPU_SLOTS)
    assert policy["cpu"] == 4
    assert policy["mem"] == INFINITY
    assert policy["cuda.device:1g.5gb-mig"] == INFINITY
    assert policy.to_json()["cuda.shares"] == "Infinity"


def test_it_lets_an_empty_unlimited_policy_admit_anything() -> None:
    policy = ResourceSlot.from_policy({}, UNLIMITED, GPU_SLOTS)
    assert fits({"cpu": 1000, "mem": 10**20, "cuda.shares": 99}, policy)


def test_it_accepts_enum_like_policy_modes() -> None:
    class Mode:
        value = "UNLIMITED"

    assert ResourceSlot.from_policy({}, Mode(), {"cpu": "count"})["cpu"] == INFINITY


@pytest.mark.parametrize("mode", ["limited", "NONE", "", None, 0])
def test_it_rejects_unknown_policy_modes(mode: object) -> None:
    with pytest.raises(SlotError, match="default_for_unspecified"):
        ResourceSlot.from_policy({}, mode, GPU_SLOTS)


def test_it_rejects_malformed_policy_values() -> None:
    with pytest.raises(SlotError, match="mem"):
        ResourceSlot.from_policy({"mem": "lots"}, LIMITED, GPU_SLOTS)


# --- user input ---------------------------------------------------------------


def test_it_parses_user_input_and_fills_missing_known_slots() -> None:
    slot = ResourceSlot.from_user_input({"cpu": "2", "mem": "4g"}, GPU_SLOTS)
    assert dict(slot) == {
        "cpu": 2,
        "mem": 4 * GiB,
        "cuda.device": 0,
        "cuda.shares": 0,
        "cuda.device:1g.5gb-mig": 0,
    }


def test_it_drops_zero_valued_unknown_slots_from_user_input() -> None:
    slot = ResourceSlot.from_user_input(
        {"cpu": 1, "mem": "1g", "rocm.device": 0, "tpu.device": "0"}, INTRINSIC_SLOTS
    )
    assert dict(slot) == {"cpu": 1, "mem": GiB}


def test_it_rejects_unknown_slots_in_user_input() -> None:
    with pytest.raises(SlotError, match="rocm.device"):
        ResourceSlot.from_user_input({"cpu": 1, "rocm.device": 1}, INTRINSIC_SLOTS)


def test_it_rejects_shmem_in_user_input_with_a_hint() -> None:
    with pytest.raises(SlotError, match="resource_opts"):
        ResourceSlot.from_user_input({"cpu": 1, "shmem": "64m"}, INTRINSIC_SLOTS)


@pytest.mark.parametrize(
    "payload",
    [{"cpu": True}, {"cpu": "-1"}, {"mem": "1.5"}, {"mem": "4x"}, {"cpu": float("nan")}],
)
def test_it_rejects_malformed_user_input(payload: dict) -> None:
    with pytest.raises(SlotError):
        ResourceSlot.from_user_input(payload, INTRINSIC_SLOTS)


def test_it_rejects_user_input_that_is_not_an_object() -> None:
    with pytest.raises(SlotError):
        ResourceSlot.from_user_input("cpu=1", INTRINSIC_SLOTS)  # type: ignore[arg-type]


# --- constructor --------------------------------------------------------------


def test_its_constructor_accepts_numbers_and_plain_numeric_strings() -> None:
    slot = ResourceSlot({"cpu": "-1.5", "mem": 1024, "cuda.shares": 0.25})
    assert dict(slot) == {"cpu": Decimal("-1.5"), "mem": 1024, "cuda.shares": Decimal("0.25")}


@pytest.mark.parametrize("value", ["4g", "NaN", "abc", True, None, Decimal("NaN"), [1]])
def test_its_constructor_rejects_non_numbers(value: object) -> None:
    with pytest.raises(SlotError, match="cpu"):
        ResourceSlot({"cpu": value})


def test_it_is_not_equal_to_a_mapping_of_non_numbers() -> None:
    assert rs(cpu=1) != {"cpu": "lots"}
