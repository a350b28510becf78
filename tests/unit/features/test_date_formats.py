"""One date format per column: ISO, day-first, month-first, ambiguous, mixed, given formats."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops.errors import DataValidationError, InvalidInputError
from mlops.features.date_formats import parse_dates
from mlops.features.validation import load_bars

MAX_BYTES = 10_000_000
DAYS = [date(2026, 1, 13), date(2026, 2, 3), date(2025, 12, 31), date(1999, 7, 4)]


def _parse(values: list[str | None], date_format: str | None = None) -> list[date | None]:
    parsed = parse_dates(pd.Series(values, dtype=object), date_format)
    return [None if pd.isna(v) else v.date() for v in parsed]


@pytest.mark.parametrize(
    "pattern",
    [
        "%Y-%m-%d",
        "%Y-%m-%dT%H:%M:%S",
        "%Y/%m/%d",
        "%Y%m%d",
        "%d/%m/%Y",
        "%m/%d/%Y",
        "%d.%m.%Y",
        "%m-%d-%Y",
        "%d/%m/%y",
        "%m/%d/%y",
        "%d/%m/%Y %H:%M",
    ],
)
def test_a_format_with_a_day_after_the_12th_is_inferred(pattern: str) -> None:
    assert _parse([d.strftime(pattern) for d in DAYS]) == DAYS


def test_iso_with_zone_becomes_naive_utc() -> None:
    parsed = parse_dates(pd.Series(["2026-01-13T01:00:00+02:00", "2026-01-14"]))
    assert parsed.tolist() == [pd.Timestamp("2026-01-12 23:00"), pd.Timestamp("2026-01-14")]


def test_the_issue_file_is_read_day_first_for_every_row() -> None:
    # Per-element guessing read 03/02/2026 as 2 March next to 13/01/2026 as 13 January.
    assert _parse(["13/01/2026", "03/02/2026"]) == [date(2026, 1, 13), date(2026, 2, 3)]


def test_missing_values_stay_missing() -> None:
    assert _parse(["2026-01-13", None, "2026-01-15"]) == [
        date(2026, 1, 13),
        None,
        date(2026, 1, 15),
    ]


@pytest.mark.parametrize(
    ("values", "formats"),
    [
        (["01/02/2026", "03/04/2026", "12/11/2026"], ["'%d/%m/%Y'", "'%m/%d/%Y'"]),
        (["01.02.2026", "03.04.2026"], ["'%d.%m.%Y'", "'%m.%d.%Y'"]),
    ],
)
def test_all_ambiguous_is_an_error_naming_formats_rows_and_the_option(
    values: list[str], formats: list[str]
) -> None:
    with pytest.raises(DataValidationError) as caught:
        _parse(values)

    message = caught.value.message
    assert "ambiguous" in message and "--date-format" in message
    assert all(f in message for f in formats)
    assert "row 1 '01" in message and "row 2 '03" in message
    assert caught.value.details["rows"] == [0, 1, 2][: len(values)]


def test_same_day_and_month_everywhere_is_not_ambiguous() -> None:
    assert _parse(["01/01/2026", "02/02/2026"]) == [date(2026, 1, 1), date(2026, 2, 2)]


def test_mixed_formats_name_the_rows_off_the_dominant_format() -> None:
    values = ["2026-01-13", "2026-01-14", "01/15/2026", "2026-01-16", "16.01.2026"]

    with pytest.raises(DataValidationError) as caught:
        _parse(values)

    message = caught.value.message
    assert "2 rows do not match ISO 8601" in message and "the other 3 rows" in message
    assert "row 3 '01/15/2026'" in message and "row 5 '16.01.2026'" in message
    assert caught.value.details["rows"] == [2, 4]


def test_unknown_format_is_an_error() -> None:
    with pytest.raises(DataValidationError, match="do not match any known date format"):
        _parse(["Jan 13 2026", "Feb 3 2026"])


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("%d/%m/%Y", [date(2026, 2, 1), date(2026, 4, 3)]),
        ("%m/%d/%Y", [date(2026, 1, 2), date(2026, 3, 4)]),
    ],
)
def test_a_given_format_is_honoured(pattern: str, expected: list[date]) -> None:
    assert _parse(["01/02/2026", "03/04/2026"], pattern) == expected


def test_rows_not_matching_the_given_format_are_named() -> None:
    with pytest.raises(DataValidationError) as caught:
        _parse(["13/01/2026", "2026-01-14", "15/01/2026"], "%d/%m/%Y")

    assert "the given --date-format '%d/%m/%Y'" in caught.value.message
    assert "row 2 '2026-01-14'" in caught.value.message


@pytest.mark.parametrize("pattern", ["dd/mm/yyyy", "%Q/%m"])
def test_a_given_format_that_is_no_strftime_pattern_is_invalid_input(pattern: str) -> None:
    with pytest.raises(InvalidInputError, match="--date-format"):
        _parse(["13/01/2026"], pattern)


@settings(max_examples=60, deadline=None)
@given(
    days=st.lists(
        st.dates(min_value=date(1970, 1, 1), max_value=date(2099, 12, 31)), min_size=1, max_size=30
    ),
    pattern=st.sampled_from(["%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y-%m-%d", "%m-%d-%Y"]),
)
def test_dates_are_read_right_or_refused_never_misread(days: list[date], pattern: str) -> None:
    """Whatever the days, the column is read as written or refused as ambiguous."""
    values = [d.strftime(pattern) for d in days]
    try:
        assert _parse(values) == days
    except DataValidationError as exc:
        assert "ambiguous" in exc.message
        assert all(d.day <= 12 for d in days)
        assert _parse(values, pattern) == days


# --------------------------------------------------------------------------- through load_bars


def _csv(tmp_path: Path, dates: list[str]) -> Path:
    rows = [f"AAPL,{d},100,101,99,100.5,1000" for d in dates]
    path = tmp_path / "bars.csv"
    path.write_text("ticker,date,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return path


def test_load_bars_names_file_and_lines_of_mixed_dates(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["13/01/2026", "14/01/2026", "2026-01-15"])

    with pytest.raises(DataValidationError) as caught:
        load_bars(path, MAX_BYTES)

    assert caught.value.message.startswith("bars.csv: column 'date': 1 row does not match")
    assert "line 4 '2026-01-15'" in caught.value.message


def test_load_bars_with_a_given_format(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["01/02/2026", "03/04/2026"])

    with pytest.raises(DataValidationError, match="ambiguous"):
        load_bars(path, MAX_BYTES)
    loaded = load_bars(path, MAX_BYTES, date_format="%m/%d/%Y")

    assert loaded["date"].tolist() == [pd.Timestamp("2026-01-02"), pd.Timestamp("2026-03-04")]
