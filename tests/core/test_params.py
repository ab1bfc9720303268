"""JavaScript parsing semantics the old handlers relied on (contract-core §1.4)."""

from __future__ import annotations

import math

import pytest

from ccsm_core.params import js_number, js_trim, normalize_string, positive_int, positive_number, to_flag


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1),
        (" 3 ", 3),
        ("1.5", 1.5),
        ("1e3", 1000),
        ("0x1A", 26),
        ("0b11", 3),
        ("", 0),
        (None, 0),
        (True, 1),
        (False, 0),
        (["5"], 5),
        ("-3", -3),
        (".5", 0.5),
        ("Infinity", math.inf),
    ],
)
def test_js_number_matches_number(value: object, expected: float) -> None:
    assert js_number(value) == expected


@pytest.mark.parametrize("value", ["abc", ["1", "2"], {"a": 1}, "1,2", "0x", "--1", "1e"])
def test_js_number_gives_nan_for_the_rest(value: object) -> None:
    assert math.isnan(js_number(value))


def test_positive_numbers_and_ids() -> None:
    assert positive_number("-3") == 0
    assert positive_number("2.5") == 2.5
    assert positive_int("2.5") is None
    assert positive_int(" 7 ") == 7
    assert positive_int("0") is None
    assert positive_int("1e400") is None


def test_normalize_string_is_string_of_value_trimmed() -> None:
    assert normalize_string(None) == ""
    assert normalize_string(1) == "1"
    assert normalize_string(1.0) == "1"
    assert normalize_string(True) == "true"
    assert normalize_string({"a": 1}) == "[object Object]"
    assert normalize_string(["a", None, 2]) == "a,,2"
    assert normalize_string("  pw \u00a0") == "pw"


def test_js_trim_keeps_the_information_separators_python_would_strip() -> None:
    assert js_trim("\x1cx\x1f") == "\x1cx\x1f"


@pytest.mark.parametrize(
    ("value", "flag"),
    [(True, 1), ("true", 1), (1, 1), ("1", 1), (1.0, 1), (False, 0), ("yes", 0), (2, 0), (None, 0), ("TRUE", 0)],
)
def test_to_flag_is_one_only_for_the_four_true_spellings(value: object, flag: int) -> None:
    assert to_flag(value) == flag


def nested(depth: int, leaf: object) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [1, 600, 1024])  # orjson parses up to 1,024 levels; Python recursed to ~500
def test_arrays_nested_as_deep_as_a_body_can_hold_convert_like_javascript(depth: int) -> None:
    assert normalize_string(nested(depth, " 7 ")) == "7"
    assert js_number(nested(depth, "7")) == 7.0
    assert math.isnan(js_number(nested(depth, [1, 2])))
    assert normalize_string([nested(depth, 1), [], nested(depth, [2, None])]) == "1,,2,"
