"""Tests for the OHLCV ingest gate (load_bars, validate_bars, save_report, ensure_valid)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from mlops.errors import DataValidationError, InvalidInputError, NotFoundError
from mlops.features import validation
from mlops.features.validation import (
    REQUIRED_COLUMNS,
    FailedExpectation,
    ValidationReport,
    ensure_valid,
    load_bars,
    validate_bars,
)
from mlops.names import TICKER

TODAY = date(2025, 1, 1)
MAX_BYTES = 1_000_000
ALL_EXPECTATIONS = 29


@pytest.fixture
def bars() -> pd.DataFrame:
    """3 tickers x 30 business days of consistent OHLCV bars."""
    days = pd.bdate_range("2024-01-01", periods=30)
    rows = []
    for i, ticker in enumerate(["AAPL", "MSFT", "BRK.B"]):
        for j, day in enumerate(days):
            close = 100.0 + 10 * i + 0.5 * j
            rows.append(
                {
                    "ticker": ticker,
                    "date": day,
                    "open": close - 0.25,
                    "high": close + 1.0,
                    "low": close - 1.0,
                    "close": close,
                    "volume": 1_000 + j,
                }
            )
    return pd.DataFrame(rows)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def failure(report: ValidationReport, description: str) -> FailedExpectation:
    matches = [f for f in report.failures if f.description == description]
    assert matches, f"no failure {description!r} in {[f.description for f in report.failures]}"
    return matches[0]


def failed_descriptions(report: ValidationReport) -> set[str]:
    return {f.description for f in report.failures}


# --------------------------------------------------------------------------- valid batches


def test_valid_csv_round_trip_passes(bars: pd.DataFrame, tmp_path: Path) -> None:
    loaded = load_bars(write_csv(bars, tmp_path / "bars.csv"), MAX_BYTES)

    assert list(loaded.columns) == list(REQUIRED_COLUMNS)
    assert pd.api.types.is_datetime64_dtype(loaded["date"])
    assert pd.api.types.is_float_dtype(loaded["close"])
    report = validate_bars(loaded, "bars.csv", today=TODAY)
    assert report.success, report.failures
    assert report.evaluated == ALL_EXPECTATIONS
    assert report.row_count == 90
    assert report.failures == [] and report.skipped == []


@pytest.mark.parametrize("name", ["bars.parquet", "bars.pq"])
def test_valid_parquet_round_trip_passes(bars: pd.DataFrame, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    bars.to_parquet(path, index=False)

    report = validate_bars(load_bars(path, MAX_BYTES), name, today=TODAY)

    assert report.success, report.failures
    assert report.evaluated == ALL_EXPECTATIONS


def test_gzipped_csv_is_read(bars: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "bars.csv.gz"
    bars.to_csv(path, index=False, compression="gzip")

    assert validate_bars(load_bars(path, MAX_BYTES), "bars.csv.gz", today=TODAY).success


def test_timestamp_alias_is_accepted(bars: pd.DataFrame, tmp_path: Path) -> None:
    path = write_csv(bars.rename(columns={"date": "timestamp"}), tmp_path / "bars.csv")

    loaded = load_bars(path, MAX_BYTES)

    assert "date" in loaded.columns and "timestamp" not in loaded.columns
    assert validate_bars(loaded, "bars.csv", today=TODAY).success


def test_tz_aware_dates_become_naive_utc(bars: pd.DataFrame) -> None:
    aware = bars.assign(date=bars["date"].dt.tz_localize("America/New_York"))

    report = validate_bars(aware, "aware", today=TODAY)

    assert report.success, report.failures


# --------------------------------------------------------------------------- unreadable files


def test_malformed_csv_reports_line(bars: pd.DataFrame, tmp_path: Path) -> None:
    lines = bars.to_csv(index=False).splitlines()
    lines[3] += ",surplus"
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(DataValidationError) as caught:
        load_bars(path, MAX_BYTES)

    assert "bad.csv" in caught.value.message
    assert "line 4" in caught.value.message
    assert "expected 7 fields, saw 8" in caught.value.message
    assert caught.value.details["line"] == 4


def test_truncated_csv_mid_row(bars: pd.DataFrame, tmp_path: Path) -> None:
    text = bars.to_csv(index=False)
    path = tmp_path / "cut.csv"
    path.write_text(text[: text.rindex(",", 0, len(text) - 20)])  # stop inside the last row

    with pytest.raises(DataValidationError) as caught:
        load_bars(path, MAX_BYTES)

    assert "cut.csv" in caught.value.message
    assert "line 91" in caught.value.message


def test_truncated_csv_inside_quote(tmp_path: Path) -> None:
    path = tmp_path / "quote.csv"
    path.write_text(
        "ticker,date,open,high,low,close,volume\n"
        "AAPL,2024-01-02,1,2,0.5,1.5,100\n"
        'AAPL,2024-01-03,1,2,0.5,"1.5'
    )

    with pytest.raises(DataValidationError) as caught:
        load_bars(path, MAX_BYTES)

    assert "quote.csv" in caught.value.message
    assert "line 3" in caught.value.message


def test_binary_garbage_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00\x10")

    with pytest.raises(DataValidationError, match=r"malformed CSV garbage\.csv"):
        load_bars(path, MAX_BYTES)


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not really parquet PAR1")

    with pytest.raises(DataValidationError, match=r"unreadable parquet file broken\.parquet"):
        load_bars(path, MAX_BYTES)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")

    with pytest.raises(DataValidationError, match=r"empty\.csv is empty \(0 bytes\)"):
        load_bars(path, MAX_BYTES)


def test_header_only_file(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text(",".join(REQUIRED_COLUMNS) + "\n")

    with pytest.raises(DataValidationError, match=r"header\.csv has no data rows"):
        load_bars(path, MAX_BYTES)


def test_file_over_max_bytes(bars: pd.DataFrame, tmp_path: Path) -> None:
    path = write_csv(bars, tmp_path / "big.csv")
    size = path.stat().st_size

    with pytest.raises(InvalidInputError) as caught:
        load_bars(path, max_bytes=100)

    assert caught.value.message == f"big.csv is {size} bytes, over the limit of 100 bytes"
    assert caught.value.details["size"] == size


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"nope\.csv"):
        load_bars(tmp_path / "nope.csv", MAX_BYTES)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "bars.xlsx"
    path.write_text("whatever")

    with pytest.raises(InvalidInputError, match=r"unsupported file type for bars\.xlsx"):
        load_bars(path, MAX_BYTES)


# --------------------------------------------------------------------------- failing expectations


def test_missing_column(bars: pd.DataFrame) -> None:
    report = validate_bars(bars.drop(columns=["volume"]), "bars.csv", today=TODAY)

    assert not report.success
    columns = failure(report, "columns are exactly ticker, date, open, high, low, close, volume")
    assert columns.observed["missing"] == ["volume"]
    assert columns.observed["extra"] == []
    assert any(s.startswith("volume >= 0 (column 'volume' is missing") for s in report.skipped)
    assert report.evaluated == ALL_EXPECTATIONS - 3


def test_extra_column(bars: pd.DataFrame) -> None:
    report = validate_bars(bars.assign(vwap=1.0), "bars.csv", today=TODAY)

    assert failed_descriptions(report) == {
        "columns are exactly ticker, date, open, high, low, close, volume"
    }
    assert report.failures[0].observed["extra"] == ["vwap"]
    assert report.evaluated == ALL_EXPECTATIONS


def test_wrong_type_text_in_close(bars: pd.DataFrame, tmp_path: Path) -> None:
    text = bars.assign(close=bars["close"].astype(object))
    text.loc[4, "close"] = "n/a-ish"
    loaded = load_bars(write_csv(text, tmp_path / "bars.csv"), MAX_BYTES)

    report = validate_bars(loaded, "bars.csv", today=TODAY)

    wrong = failure(report, "close is int or float")
    assert wrong.unexpected_count == 1
    assert wrong.examples[0]["row"] == 4
    assert wrong.examples[0]["close"] == "n/a-ish"
    assert wrong.observed == ["n/a-ish"]
    assert "close > 0 (column 'close' is not numeric)" in report.skipped
    assert not report.success


def test_duplicate_ticker_date(bars: pd.DataFrame) -> None:
    duplicated = pd.concat([bars, bars.iloc[[0, 1]]], ignore_index=True)

    report = validate_bars(duplicated, "bars.csv", today=TODAY)

    dup = failure(report, "(ticker, date) unique")
    assert dup.unexpected_count == 4
    assert dup.column == "ticker, date"
    assert {e["row"] for e in dup.examples} == {0, 1, 90, 91}
    assert failed_descriptions(report) == {"(ticker, date) unique"}


def test_negative_price(bars: pd.DataFrame) -> None:
    bars.loc[5, ["open", "low"]] = -2.0

    report = validate_bars(bars, "bars.csv", today=TODAY)

    for column in ("open", "low"):
        negative = failure(report, f"{column} > 0")
        assert negative.unexpected_count == 1
        assert negative.examples == [
            {**bars.iloc[5].to_dict(), "row": 5, "date": "2024-01-08T00:00:00"}
        ]


def test_high_below_low(bars: pd.DataFrame) -> None:
    bars.loc[7, "high"] = bars.loc[7, "low"] - 5

    report = validate_bars(bars, "bars.csv", today=TODAY)

    bad = failure(report, "high >= low")
    assert bad.expectation == "expect_column_pair_values_a_to_be_greater_than_b"
    assert bad.column == "high, low"
    assert bad.examples[0]["row"] == 7
    assert failed_descriptions(report) == {"high >= low", "high >= open", "high >= close"}


def test_future_date(bars: pd.DataFrame) -> None:
    report = validate_bars(bars, "bars.csv", today=date(2024, 2, 7))

    future = failure(report, "date not after 2024-02-07")
    assert future.unexpected_count == 6  # 2 business days after the cutoff x 3 tickers
    assert future.examples[0]["date"] == "2024-02-08T00:00:00"


def test_null_ticker(bars: pd.DataFrame) -> None:
    bars.loc[10, "ticker"] = None

    report = validate_bars(bars, "bars.csv", today=TODAY)

    missing = failure(report, "ticker not null")
    assert missing.unexpected_count == 1
    assert missing.examples[0]["row"] == 10 and missing.examples[0]["ticker"] is None


def test_unparseable_date_is_refused_at_load_naming_its_line(
    bars: pd.DataFrame, tmp_path: Path
) -> None:
    raw = bars.assign(date=bars["date"].dt.strftime("%Y-%m-%d"))
    raw.loc[12, "date"] = "not-a-date"

    with pytest.raises(DataValidationError) as caught:
        load_bars(write_csv(raw, tmp_path / "bars.csv"), MAX_BYTES)

    assert caught.value.message.startswith("bars.csv: column 'date': 1 row does not match ISO")
    assert "line 14 'not-a-date'" in caught.value.message
    assert caught.value.details["rows"] == [12]


def test_missing_date_fails_not_null(bars: pd.DataFrame, tmp_path: Path) -> None:
    raw = bars.assign(date=bars["date"].dt.strftime("%Y-%m-%d"))
    raw.loc[12, "date"] = None
    loaded = load_bars(write_csv(raw, tmp_path / "bars.csv"), MAX_BYTES)

    report = validate_bars(loaded, "bars.csv", today=TODAY)

    missing = failure(report, "date not null")
    assert missing.unexpected_count == 1
    assert missing.examples[0]["row"] == 12 and missing.examples[0]["ticker"] == "AAPL"


def test_bad_ticker_symbol(bars: pd.DataFrame) -> None:
    bars.loc[[3, 40], "ticker"] = ["aapl", "WAY-TOO-LONG-TICKER"]

    report = validate_bars(bars, "bars.csv", today=TODAY)

    bad = failure(report, f"ticker is {TICKER.allowed}")
    assert bad.unexpected_count == 2
    assert [e["ticker"] for e in bad.examples] == ["aapl", "WAY-TOO-LONG-TICKER"]


def test_tickers_with_newline_tab_or_spaces_are_refused_from_a_csv(
    bars: pd.DataFrame, tmp_path: Path
) -> None:
    # "ZZNX\n" was ingested before ($ matches before a final newline) and could never be served.
    bars.loc[[3, 40, 61], "ticker"] = ["ZZNX\n", "MSFT ", "\tBRK.B"]
    loaded = load_bars(write_csv(bars, tmp_path / "bars.csv"), MAX_BYTES)

    report = validate_bars(loaded, "bars.csv", today=TODAY)

    bad = failure(report, f"ticker is {TICKER.allowed}")
    assert [(e["row"], e["ticker"]) for e in bad.examples] == [
        (3, "ZZNX\n"),
        (40, "MSFT "),
        (61, "\tBRK.B"),
    ]
    assert "(3 rows, e.g. row 3 ticker='ZZNX\\n')" in validation.failure_message(report)


def test_validation_leaves_the_callers_frame_as_it_was(bars: pd.DataFrame) -> None:
    raw = bars.assign(date=bars["date"].dt.strftime("%Y-%m-%d")).rename(
        columns={"date": "timestamp"}
    )
    before = raw.copy()

    assert validate_bars(raw, "bars", today=TODAY).success

    pd.testing.assert_frame_equal(raw, before)


def test_implausible_daily_move(bars: pd.DataFrame) -> None:
    bars.loc[35, ["open", "high", "low", "close"]] = [500.0, 510.0, 490.0, 505.0]

    report = validate_bars(bars, "bars.csv", today=TODAY)

    move = failure(report, "close-to-close move per ticker < 2x up or down")
    assert move.unexpected_count == 2  # the jump up and the jump back down
    assert [e["row"] for e in move.examples] == [35, 36]
    assert move.observed == [pytest.approx(505 / 112.0), pytest.approx(505 / 113.0)]


def test_gx_exception_is_a_failure_with_message(
    bars: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = bars.assign(close=bars["close"].astype(object))
    text.loc[0, "close"] = "oops"
    monkeypatch.setattr(validation, "_is_numeric_column", lambda series: True)

    report = validate_bars(text, "bars.csv", today=TODAY)

    crashed = failure(report, "close > 0")
    assert crashed.error and "same type" in crashed.error
    assert not report.success


def test_zero_rows_frame_fails_row_count(bars: pd.DataFrame) -> None:
    report = validate_bars(bars.iloc[:0], "empty", today=TODAY)

    assert failed_descriptions(report) == {"at least one row"}
    assert failure(report, "at least one row").observed == 0


# --------------------------------------------------------------------------- ensure_valid


def test_ensure_valid_writes_report_and_raises(bars: pd.DataFrame, tmp_path: Path) -> None:
    bars.loc[2, "close"] = -1.0
    duplicated = pd.concat([bars, bars.iloc[[0]]], ignore_index=True)
    reports = tmp_path / "reports" / "nested"

    with pytest.raises(DataValidationError) as caught:
        ensure_valid(duplicated, "bars.csv", reports, today=TODAY)

    message = caught.value.message
    assert message.startswith(f"3 of {ALL_EXPECTATIONS} expectations failed for bars.csv: ")
    assert "close > 0 (1 row, e.g. row 2 close=-1.0)" in message
    assert (
        "(ticker, date) unique (2 rows, e.g. row 0 ticker='AAPL' date='2024-01-01T00:00:00')"
        in message
    )
    assert "close >= low (1 row, e.g. row 2 close=-1.0 low=100.0)" in message
    path = Path(caught.value.details["report_path"])
    assert path.parent == reports and path.name.startswith("validation-")
    saved = json.loads(path.read_text())
    assert saved["success"] is False and saved["source"] == "bars.csv"
    assert {f["description"] for f in saved["failures"]} == failed_descriptions(
        ValidationReport.model_validate(saved)
    )
    assert saved["failures"] == caught.value.details["failures"]
    negative = next(f for f in saved["failures"] if f["description"] == "close > 0")
    assert negative["examples"][0]["close"] == -1.0


def test_ensure_valid_returns_report_on_success(bars: pd.DataFrame, tmp_path: Path) -> None:
    report = ensure_valid(bars, "bars.csv", tmp_path, today=TODAY)

    assert report.success and report.evaluated == ALL_EXPECTATIONS
    saved = list(tmp_path.glob("validation-*.json"))
    assert len(saved) == 1
    assert ValidationReport.model_validate_json(saved[0].read_text()) == report
    assert report.validated_at.utcoffset() is not None


def test_csv_with_byte_order_mark_and_blank_lines(bars: pd.DataFrame, tmp_path: Path) -> None:
    text = bars.to_csv(index=False).replace("\n", "\n\n", 3)
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())

    loaded = load_bars(path, MAX_BYTES)

    assert list(loaded.columns) == list(REQUIRED_COLUMNS) and len(loaded) == len(bars)
    assert validate_bars(loaded, "excel.csv", today=TODAY).success


def test_text_in_a_numeric_column_keeps_the_column_as_text(
    bars: pd.DataFrame, tmp_path: Path
) -> None:
    raw = bars.astype({"volume": object})
    raw.loc[7, "volume"] = "lots"
    raw.loc[8, "volume"] = "NA"

    loaded = load_bars(write_csv(raw, tmp_path / "bars.csv"), MAX_BYTES)

    assert loaded.loc[7, "volume"] == "lots" and loaded.loc[8, "volume"] is None
    assert loaded.loc[9, "volume"] == 1009 and pd.api.types.is_float_dtype(loaded["close"])
