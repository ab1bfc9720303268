"""Value encodings as the old backend emitted them (contract-core §1.5)."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from ccsm_core.codec import dumps, instant_from_json, loads_body, utc_wall_time
from ccsm_core.errors import ApiError


def test_datetimes_are_iso_utc_with_milliseconds() -> None:
    assert dumps({"t": dt.datetime(2026, 2, 2, 8, 0, 0, 123456)}) == b'{"t":"2026-02-02T08:00:00.123Z"}'


def test_aware_datetimes_are_converted_to_utc() -> None:
    tz = dt.timezone(dt.timedelta(hours=-5))
    assert dumps(dt.datetime(2026, 2, 2, 3, 0, tzinfo=tz)) == b'"2026-02-02T08:00:00.000Z"'


def test_dates_are_midnight_utc() -> None:
    assert dumps(dt.date(2026, 3, 2)) == b'"2026-03-02T00:00:00.000Z"'


def test_decimals_are_strings_and_flags_stay_numbers() -> None:
    assert dumps({"d": decimal.Decimal("2.50"), "flag": 1, "role": 2}) == b'{"d":"2.50","flag":1,"role":2}'


def test_time_columns_are_hh_mm_ss() -> None:
    assert dumps(dt.timedelta(hours=9, minutes=5, seconds=7)) == b'"09:05:07"'


@pytest.mark.parametrize("ctype", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_non_json_bodies_read_as_empty_objects(ctype: str | None) -> None:
    assert loads_body(b'{"a":1}', ctype) == {}


def test_json_with_charset_parameter_is_parsed() -> None:
    assert loads_body(b'{"a":1}', "application/json; charset=utf-8") == {"a": 1}


@pytest.mark.parametrize("raw", [b"{", b"1", b"null", b'"x"', b"[1,]", b'{"a":Infinity}'])
def test_malformed_or_scalar_json_is_a_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as info:
        loads_body(raw, "application/json")
    assert info.value.status == 400


# --- instants from clients (issue 12 item 8) ---------------------------------------------------------------------

EDGE_OF_THE_CALENDAR = ["9999-12-31T23:30:00-01:00", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-23:59"]


@pytest.mark.parametrize("text", EDGE_OF_THE_CALENDAR)
def test_an_instant_whose_utc_time_leaves_the_calendar_is_not_an_instant(text: str) -> None:
    assert utc_wall_time(text) is None
    assert instant_from_json(text) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("9999-12-31T23:59:59Z", dt.datetime(9999, 12, 31, 23, 59, 59)),
        ("9999-12-31T23:30:00+01:00", dt.datetime(9999, 12, 31, 22, 30)),
        ("1000-01-01T00:30:00+00:30", dt.datetime(1000, 1, 1)),
        (" 2026-02-05T09:00:00+01:00 ", dt.datetime(2026, 2, 5, 8, 0)),
        ("2026-02-05", dt.datetime(2026, 2, 5)),
        (1893456000000, dt.datetime(2030, 1, 1)),
        (-30610224000000, dt.datetime(1000, 1, 1)),
    ],
)
def test_instants_inside_the_datetime_range_are_utc_wall_times(raw: object, expected: dt.datetime) -> None:
    assert instant_from_json(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["0999-12-31T23:59:59Z", "1000-01-01T00:30:00+01:00", 8.64e15, -8.64e15, 253402300800000, True, None, [1], "x"],
)
def test_values_new_date_rejects_or_mysql_cannot_store_are_none(raw: object) -> None:
    assert instant_from_json(raw) is None
