"""The ingest gate across the batch boundary: the close-to-close move check compares a batch
with the stored bars adjacent to it (``neighbours``), and large frames validated in parts
report exactly what one GX batch reports."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from mlops.errors import DataValidationError
from mlops.features import validation
from mlops.features.validation import (
    FailedExpectation,
    ValidationReport,
    ensure_valid,
    failure_message,
    validate_bars,
)

TODAY = date(2025, 1, 1)
MOVE = "close-to-close move per ticker < 2x up or down"


def bar(ticker: str, day: str, close: float) -> dict[str, object]:
    return {
        "ticker": ticker,
        "date": pd.Timestamp(day),
        "open": close,
        "high": close + 1.0,
        "low": close - 1.0,
        "close": close,
        "volume": 1_000,
    }


def frame(*bars: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(bars))


def move_failure(report: ValidationReport) -> FailedExpectation:
    matches = [f for f in report.failures if f.description == MOVE]
    assert matches, f"no move failure in {[f.description for f in report.failures]}"
    return matches[0]


# --------------------------------------------------------------------------- one-day batches


def test_a_one_day_batch_at_3x_the_stored_close_fails_as_a_split(tmp_path: Path) -> None:
    batch = frame(bar("AAPL", "2024-02-12", 315.0), bar("MSFT", "2024-02-12", 50.0))
    neighbours = frame(bar("AAPL", "2024-02-09", 105.0), bar("MSFT", "2024-02-09", 49.0))

    with pytest.raises(DataValidationError) as caught:
        ensure_valid(batch, "day.csv", tmp_path, neighbours, today=TODAY)

    message = caught.value.message
    assert message.startswith("1 of 29 expectations failed for day.csv: ")
    assert (
        f"{MOVE} (1 row, e.g. row 0 ticker='AAPL' date='2024-02-12T00:00:00' close=315.0 "
        "after close=105.0 on 2024-02-09T00:00:00 (x3.00): looks like an unadjusted split)"
    ) in message
    [failure] = caught.value.details["failures"]
    assert failure["unexpected_count"] == 1 and failure["unexpected_percent"] == 50.0
    assert failure["examples"] == [
        {
            "row": 0,
            **bar("AAPL", "2024-02-12T00:00:00", 315.0),
            "date": "2024-02-12T00:00:00",
            "previous_date": "2024-02-09T00:00:00",
            "previous_close": 105.0,
        }
    ]


def test_a_fall_to_a_third_reads_as_a_division() -> None:
    batch = frame(bar("AAPL", "2024-02-12", 35.0))
    neighbours = frame(bar("AAPL", "2024-02-09", 105.0))

    report = validate_bars(batch, "day.csv", neighbours, today=TODAY)

    assert "close=35.0 after close=105.0 on 2024-02-09T00:00:00 (/3.00)" in failure_message(report)


def test_a_one_day_batch_close_to_the_stored_close_passes() -> None:
    batch = frame(bar("AAPL", "2024-02-12", 107.0))
    neighbours = frame(bar("AAPL", "2024-02-09", 105.0))

    report = validate_bars(batch, "day.csv", neighbours, today=TODAY)

    assert report.success, report.failures
    assert report.row_count == 1 and report.evaluated == 29


@pytest.mark.parametrize("neighbours", [None, frame(bar("AAPL", "2024-02-09", 1.0)).iloc[:0]])
def test_a_first_ingest_has_nothing_to_compare_a_day_with(
    neighbours: pd.DataFrame | None,
) -> None:
    report = validate_bars(frame(bar("AAPL", "2024-02-12", 315.0)), "day", neighbours, today=TODAY)

    assert report.success, report.failures


# --------------------------------------------------------------------------- corrections


def test_a_correction_is_compared_with_the_bars_before_and_after_it() -> None:
    correction = frame(bar("AAPL", "2024-02-12", 160.0))
    neighbours = frame(bar("AAPL", "2024-02-09", 100.0), bar("AAPL", "2024-02-13", 40.0))

    report = validate_bars(correction, "fix.csv", neighbours, today=TODAY)

    move = move_failure(report)
    assert move.unexpected_count == 1
    assert move.examples[0]["row"] == 0
    assert move.examples[0]["next_close"] == 40.0
    assert move.examples[0]["next_date"] == "2024-02-13T00:00:00"
    assert move.observed == [pytest.approx(4.0)]
    assert "close=160.0 before close=40.0 on 2024-02-13T00:00:00 (/4.00)" in failure_message(report)


def test_the_larger_of_the_two_moves_of_a_correction_is_reported() -> None:
    correction = frame(bar("AAPL", "2024-02-12", 300.0))
    neighbours = frame(bar("AAPL", "2024-02-09", 100.0), bar("AAPL", "2024-02-13", 120.0))

    move = move_failure(validate_bars(correction, "fix.csv", neighbours, today=TODAY))

    assert move.observed == [pytest.approx(3.0)]
    assert move.examples[0]["previous_close"] == 100.0 and "next_close" not in move.examples[0]


def test_a_correction_in_line_with_both_neighbours_passes() -> None:
    correction = frame(bar("AAPL", "2024-02-12", 101.0), bar("AAPL", "2024-02-13", 102.0))
    neighbours = frame(bar("AAPL", "2024-02-09", 100.0), bar("AAPL", "2024-02-14", 103.0))

    assert validate_bars(correction, "fix.csv", neighbours, today=TODAY).success


def test_the_last_batch_bar_is_compared_with_the_next_stored_bar() -> None:
    batch = frame(bar("AAPL", "2024-02-12", 101.0), bar("AAPL", "2024-02-13", 102.0))
    neighbours = frame(bar("AAPL", "2024-02-09", 100.0), bar("AAPL", "2024-02-14", 306.0))

    move = move_failure(validate_bars(batch, "fix.csv", neighbours, today=TODAY))

    assert [e["row"] for e in move.examples] == [1]
    assert move.examples[0]["next_close"] == 306.0


# --------------------------------------------------------------------------- context only


def test_neighbours_are_never_counted_or_reported_as_batch_rows() -> None:
    batch = frame(bar("AAPL", "2024-02-12", 101.0))
    neighbours = frame(
        bar("AAPL", "2024-02-09", 100.0),
        bar("ZZZ", "2024-02-09", 10.0),  # a jump between stored bars of another ticker
        bar("ZZZ", "2024-02-12", 90.0),
        {**bar("QQQ", "2024-02-12", -5.0), "ticker": "bad ticker"},
    )

    report = validate_bars(batch, "day.csv", neighbours, today=TODAY)

    assert report.success, report.failures
    assert report.row_count == 1


def test_within_a_batch_a_split_is_reported_on_the_row_after_it() -> None:
    batch = frame(
        bar("AAPL", "2024-02-08", 100.0),
        bar("AAPL", "2024-02-09", 101.0),
        bar("AAPL", "2024-02-12", 50.0),
    )

    report = validate_bars(batch, "bars.csv", today=TODAY)

    move = move_failure(report)
    assert [e["row"] for e in move.examples] == [2]
    assert (
        "e.g. row 2 ticker='AAPL' date='2024-02-12T00:00:00' close=50.0 after close=101.0 on "
        "2024-02-09T00:00:00 (/2.02): looks like an unadjusted split"
    ) in failure_message(report)


# --------------------------------------------------------------------------- large frames


@pytest.fixture
def bars() -> pd.DataFrame:
    days = pd.bdate_range("2024-01-01", periods=30)
    rows = [
        bar(ticker, str(day.date()), 100.0 + 10 * i + 0.5 * j)
        for i, ticker in enumerate(["AAPL", "MSFT", "BRK.B"])
        for j, day in enumerate(days)
    ]
    return frame(*rows)


def _broken(bars: pd.DataFrame, how: str) -> pd.DataFrame:
    broken = bars.copy()
    if how == "ticker":
        broken.loc[[3, 40], "ticker"] = ["aapl", None]
    elif how == "date":
        broken.loc[5, "date"] = pd.NaT
        broken.loc[6, "date"] = pd.Timestamp("2030-01-01")
    elif how == "duplicate":
        broken = pd.concat([broken, broken.iloc[[0, 1]]], ignore_index=True)
    elif how == "prices":
        broken.loc[7, ["high", "close"]] = [-1.0, 500.0]
    elif how == "text":
        broken = broken.astype({"volume": object})
        broken.loc[8, "volume"] = "lots"
    return broken


@pytest.mark.parametrize("how", ["valid", "ticker", "date", "duplicate", "prices", "text"])
def test_a_large_frame_validated_in_parts_reports_what_one_batch_reports(
    bars: pd.DataFrame, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = _broken(bars, how)
    neighbours = frame(bar("AAPL", "2023-12-29", 99.0))
    whole = validate_bars(broken, "bars.csv", neighbours, today=TODAY)

    monkeypatch.setattr(validation, "_ONE_BATCH_ROWS", 0)
    in_parts = validate_bars(broken, "bars.csv", neighbours, today=TODAY)

    assert in_parts.model_dump(exclude={"validated_at"}) == whole.model_dump(
        exclude={"validated_at"}
    )
    assert whole.success is (how == "valid")


def test_moves_follow_the_dates_whatever_the_order_of_the_rows() -> None:
    batch = frame(
        bar("AAPL", "2024-02-12", 50.0),
        bar("MSFT", "2024-02-09", 20.0),
        bar("AAPL", "2024-02-08", 100.0),
        bar("MSFT", "2024-02-12", 21.0),
        bar("AAPL", "2024-02-09", 101.0),
    )

    move = move_failure(validate_bars(batch, "bars.csv", today=TODAY))

    assert [e["row"] for e in move.examples] == [0]
    assert move.examples[0]["previous_close"] == 101.0


# --------------------------------------------------------------------------- loading


def test_tickers_that_are_not_text_are_read_as_text(tmp_path: Path) -> None:
    raw = frame(bar("AAPL", "2024-02-08", 100.0), bar("AAPL", "2024-02-09", 101.0))
    raw["ticker"] = [123, 456]
    path = tmp_path / "bars.parquet"
    raw.to_parquet(path, index=False)

    loaded = validation.load_bars(path, 1_000_000)

    assert loaded["ticker"].tolist() == ["123", "456"]
    report = validate_bars(loaded, "bars.parquet", today=TODAY)
    [bad] = report.failures
    assert bad.column == "ticker" and bad.observed == ["123", "456"]
