"""The `ingest` flow end to end on real Feast, GX and Prefect (test server)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from tests.support.ingest import read_offline, run_ingest_flow
from tests.support.settings import make_settings
from tests.support.statistics_reference import assert_stored_statistics_match

from mlops.db import session_scope
from mlops.errors import DataValidationError
from mlops.features import ingest
from mlops.features.catalog import all_features
from mlops.features.demo_data import generate_ohlcv
from mlops.features.serving import online_features
from mlops.features.sources import bars_source
from mlops.features.versions import list_versions
from mlops.settings import Settings


def _store_fingerprint(settings: Settings) -> dict[str, str]:
    """Hashes of every file of the offline store, the Feast registry and the online store."""
    files = sorted(
        p for d in (settings.data_dir, settings.feast_dir) for p in d.rglob("*") if p.is_file()
    )
    return {
        str(p.relative_to(settings.home)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


def test_ingest_records_versions_steps_and_serves_online(ingested: Settings) -> None:
    runs = ingest.latest_runs(ingested, limit=1000)
    run = runs[-1]  # the initial load (other tests add runs to this store)
    assert run.status == "completed"
    assert [s["step"] for s in run.steps] == [
        "load",
        "validate",
        "compute",
        "write_offline",
        "apply",
        "materialize",
        "statistics",
    ]
    assert run.rows == len(read_offline(ingested, ingest.BARS_FILE))
    with session_scope(ingested.metadata_url) as session:
        history = list_versions(session, "price_returns")
    assert [(v.version, v.change_kind, v.author) for v in history] == [(1, "created", "tester")]
    assert history[0].feast_version == "v0"
    tickers = sorted(read_offline(ingested, ingest.BARS_FILE)["ticker"].unique())
    served = online_features(ingested, tickers[:2], ["ret_1d"], None)
    features = read_offline(ingested, ingest.FEATURES_FILE)
    latest = features.sort_values("event_timestamp").groupby("ticker").last()
    assert served["ret_1d"] == pytest.approx([latest.loc[t, "ret_1d"] for t in tickers[:2]])


def test_label_is_not_served_online(ingested: Settings) -> None:
    from mlops.errors import NotFoundError

    with pytest.raises(NotFoundError, match="Not served online"):
        online_features(ingested, ["AAA"], ["label_next_day_up"], None)


def test_reingesting_unchanged_definitions_records_no_version(fresh: Settings) -> None:
    result = run_ingest_flow(fresh, message="again")
    assert result.new_versions == []
    with session_scope(fresh.metadata_url) as session:
        assert len(list_versions(session, "risk_momentum")) == 1


def test_user_csv_adds_rows_for_a_new_ticker(fresh: Settings, tmp_path: Path) -> None:
    extra = generate_ohlcv(n_tickers=8, start=fresh.demo_start, end=fresh.demo_end)
    new = extra[~extra["ticker"].isin(read_offline(fresh, ingest.BARS_FILE)["ticker"])]
    new = new[new["ticker"] == new["ticker"].iloc[0]]
    path = tmp_path / "new.csv"
    new.rename(columns={"date": "timestamp"}).to_csv(path, index=False)
    result = run_ingest_flow(fresh, source=str(path))
    assert result.rows == len(new)
    served = online_features(fresh, [new["ticker"].iloc[0]], ["ret_1d", "rsi_14"], None)
    assert served["ret_1d"][0] is not None
    for feature in ("ret_1d", "rsi_14", "label_next_day_up"):
        assert_stored_statistics_match(fresh, feature)


def test_stored_statistics_equal_a_full_recomputation(ingested: Settings) -> None:
    features = all_features(ingested)
    assert len(features) == 9
    for feature in features:
        assert_stored_statistics_match(ingested, f"{feature.feature_view}:{feature.name}")


def write_yahoo_files(bars: pd.DataFrame, folder: Path) -> Path:
    """One Yahoo-style CSV per ticker (Date, Open, ..., Adj Close, Volume), named after it."""
    folder.mkdir(parents=True, exist_ok=True)
    for ticker, rows in bars.groupby("ticker"):
        yahoo = pd.DataFrame(
            {
                "Date": rows["date"].dt.strftime("%Y-%m-%d"),
                "Open": rows["open"],
                "High": rows["high"],
                "Low": rows["low"],
                "Close": rows["close"],
                "Adj Close": rows["close"] * 0.5,
                "Volume": rows["volume"],
            }
        )
        yahoo.to_csv(folder / f"{ticker}.csv", index=False)
    return folder


def test_a_folder_of_yahoo_files_is_ingested_with_tickers_from_file_names(
    fresh: Settings, tmp_path: Path
) -> None:
    extra = generate_ohlcv(n_tickers=8, start=fresh.demo_start, end=fresh.demo_end)
    new = extra[~extra["ticker"].isin(read_offline(fresh, ingest.BARS_FILE)["ticker"])]
    folder = write_yahoo_files(new, tmp_path / "yahoo")
    source = bars_source(fresh, [str(folder)], layout="yahoo")

    result = run_ingest_flow(fresh, source=source)

    assert result.rows == len(new) and result.files == new["ticker"].nunique()
    assert result.ignored_columns == ["Adj Close"]
    stored = read_offline(fresh, ingest.BARS_FILE)
    stored = stored[stored["ticker"].isin(new["ticker"])].sort_values(["ticker", "date"])
    expected = new.sort_values(["ticker", "date"])
    assert stored["close"].tolist() == pytest.approx(expected["close"].tolist())
    served = online_features(fresh, sorted(new["ticker"].unique()), ["ret_1d"], None)
    assert all(value is not None for value in served["ret_1d"])
    assert ingest.latest_runs(fresh, limit=1)[0].source == f"{folder} (layout yahoo)"


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda df: df.assign(close=-df["close"]), id="negative-prices"),
        pytest.param(lambda df: pd.concat([df, df.head(3)]), id="duplicates"),
        pytest.param(lambda df: df.assign(date=pd.Timestamp("2999-01-01")), id="future-dates"),
    ],
)
def test_rejected_batch_changes_nothing(fresh: Settings, tmp_path: Path, corrupt) -> None:  # type: ignore[no-untyped-def]
    bars = read_offline(fresh, ingest.BARS_FILE).tail(50)
    path = tmp_path / "bad.parquet"
    corrupt(bars).to_parquet(path, index=False)
    before = _store_fingerprint(fresh)
    with pytest.raises(DataValidationError) as caught:
        run_ingest_flow(fresh, source=str(path))
    assert _store_fingerprint(fresh) == before
    report = json.loads(Path(caught.value.details["report_path"]).read_text())
    assert report["success"] is False and report["failures"]
    assert all(f["expectation"] for f in report["failures"])
    run = ingest.latest_runs(fresh, limit=1)[0]
    assert run.status == "rejected" and run.report_path == caught.value.details["report_path"]


def test_a_daily_batch_is_checked_against_the_stored_previous_close(
    fresh: Settings, tmp_path: Path
) -> None:
    """One new day whose close is 3x the stored previous close (an unadjusted split) is
    refused, naming ticker and date; the same day with its real close is ingested."""
    end = fresh.demo_end + timedelta(days=7)
    later = generate_ohlcv(n_tickers=fresh.demo_tickers, start=fresh.demo_start, end=end)
    day = later[later["date"] > pd.Timestamp(fresh.demo_end)]
    day = day[day["date"] == day["date"].min()]
    split = day.copy()
    hit = split["ticker"] == split["ticker"].iloc[0]
    split.loc[hit, ["open", "high", "low", "close"]] *= 3
    path = tmp_path / "split.parquet"
    split.to_parquet(path, index=False)
    before = _store_fingerprint(fresh)
    with pytest.raises(DataValidationError) as caught:
        run_ingest_flow(fresh, source=str(path))
    assert "unadjusted split" in caught.value.message
    assert str(split.loc[hit, "ticker"].iloc[0]) in caught.value.message
    assert _store_fingerprint(fresh) == before
    path = tmp_path / "day.parquet"
    day.to_parquet(path, index=False)
    assert run_ingest_flow(fresh, source=str(path)).rows == len(day)


def test_a_missing_column_is_refused_at_load_naming_what_the_file_has(
    fresh: Settings, tmp_path: Path
) -> None:
    bars = read_offline(fresh, ingest.BARS_FILE).tail(50)
    path = tmp_path / "bad.parquet"
    bars.drop(columns=["volume"]).rename(columns={"close": "Close"}).to_parquet(path, index=False)
    before = _store_fingerprint(fresh)
    with pytest.raises(DataValidationError) as caught:
        run_ingest_flow(fresh, source=str(path))
    assert caught.value.message == (
        "bad.parquet lacks the columns close, volume: it has ticker, date, open, high, low, "
        "Close; add --map Close=close --map COLUMN=volume"
    )
    assert _store_fingerprint(fresh) == before
    run = ingest.latest_runs(fresh, limit=1)[0]
    assert run.status == "rejected" and run.error == caught.value.message


def test_ambiguous_dates_and_unservable_tickers_change_nothing_until_the_format_is_given(
    fresh: Settings, tmp_path: Path
) -> None:
    extra = generate_ohlcv(n_tickers=8, start=fresh.demo_start, end=fresh.demo_end)
    known = read_offline(fresh, ingest.BARS_FILE)["ticker"]
    new = extra[~extra["ticker"].isin(known)]
    new = new[(new["ticker"] == new["ticker"].iloc[0]) & (new["date"].dt.day <= 12)]
    day_first = new.assign(date=new["date"].dt.strftime("%d/%m/%Y"))
    path = tmp_path / "day-first.csv"
    day_first.to_csv(path, index=False)
    newline = tmp_path / "newline.csv"
    new.assign(ticker="ZZNX\n").to_csv(newline, index=False)
    before = _store_fingerprint(fresh)

    with pytest.raises(DataValidationError, match="ambiguous") as ambiguous:
        run_ingest_flow(fresh, source=str(path))
    assert "line 2 " in ambiguous.value.message
    with pytest.raises(DataValidationError, match="ticker is") as unservable:
        run_ingest_flow(fresh, source=str(newline))
    assert unservable.value.details["failures"][0]["examples"][0]["ticker"] == "ZZNX\n"
    assert _store_fingerprint(fresh) == before
    assert [r.status for r in ingest.latest_runs(fresh, limit=2)] == ["rejected", "rejected"]

    result = run_ingest_flow(fresh, source=str(path), date_format="%d/%m/%Y")

    assert result.rows == len(new)
    stored = read_offline(fresh, ingest.BARS_FILE)
    stored = stored[stored["ticker"] == new["ticker"].iloc[0]]
    assert stored["date"].tolist() == new["date"].tolist()


def test_truncated_csv_is_rejected_with_line_number(fresh: Settings, tmp_path: Path) -> None:
    bars = read_offline(fresh, ingest.BARS_FILE).tail(20)
    text = bars.to_csv(index=False)
    path = tmp_path / "cut.csv"
    path.write_text(text[: len(text) // 2].rsplit(",", 1)[0] + ',"unterminated')
    before = _store_fingerprint(fresh)
    with pytest.raises(DataValidationError, match=r"cut\.csv"):
        run_ingest_flow(fresh, source=str(path))
    assert _store_fingerprint(fresh) == before


def test_huge_file_is_refused_before_reading(prefect_server: None, tmp_path: Path) -> None:
    from mlops.errors import InvalidInputError

    settings = make_settings(tmp_path / "home", ingest_max_bytes=1000)
    path = tmp_path / "big.csv"
    generate_ohlcv(n_tickers=2, end=settings.demo_end).to_csv(path, index=False)
    with pytest.raises(InvalidInputError, match="over the limit"):
        run_ingest_flow(settings, source=str(path))
    assert ingest.store_is_empty(settings)
