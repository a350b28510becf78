"""The platform's offline store (`offline_store.py`) returns exactly what Feast's DuckDB
offline store returns for the same point-in-time request: same rows, values and dtypes."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.support.settings import make_settings

from mlops.features import ingest, offline_changes
from mlops.features.datasets import LABEL_REF
from mlops.features.demo_data import generate_ohlcv
from mlops.features.offline import CURRENT, exclusive_write
from mlops.features.offline_state import open_snapshot
from mlops.features.offline_store import AsofRetrievalJob, pinned_path
from mlops.features.store import feature_store_config, forget_store, open_store
from mlops.settings import Settings

START, END = date(2024, 1, 2), date(2024, 4, 30)
GAP = (pd.Timestamp("2024-02-10"), pd.Timestamp("2024-02-29"))
"""A ticker without bars in this span: entity rows in it are older than the 7-day ttl."""
TIES_VIEW = "ties"


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A small offline store, opened by the platform (our store) and by Feast's DuckDB store,
    with an extra view over a source whose rows tie on the event timestamp."""
    from feast import FeatureStore, FeatureView, Field, FileSource
    from feast.repo_config import RepoConfig
    from feast.types import Float64

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    settings = make_settings(tmp_path_factory.mktemp("offline-store"))
    bars = generate_ohlcv(n_tickers=4, start=START, end=END, seed=11)
    gapped = bars["ticker"] == bars["ticker"].iloc[0]
    bars = bars[~(gapped & bars["date"].between(*GAP))]
    with exclusive_write(settings):
        offline_changes.full_rebuild(settings, bars)
    ingest.apply_definitions(settings, "tester", "views")
    ours = open_store(settings)

    ties_path = settings.home / "ties.parquet"
    _ties(bars).to_parquet(ties_path, index=False)
    source = FileSource(
        name="ties_source",
        path=str(ties_path),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    ticker = ours.get_entity("ticker")
    view = FeatureView(
        name=TIES_VIEW,
        entities=[ticker],
        ttl=timedelta(0),
        schema=[Field(name="value", dtype=Float64)],
        source=source,
    )
    ours.apply([source, view])

    config = RepoConfig(**{**feature_store_config(settings), "offline_store": {"type": "duckdb"}})
    config.repo_path = settings.feast_dir
    feast_duckdb = FeatureStore(repo_path=str(settings.feast_dir), config=config)
    yield {"settings": settings, "ours": ours, "feast": feast_duckdb, "bars": bars}
    forget_store(settings)


def _ties(bars: pd.DataFrame) -> pd.DataFrame:
    """Two rows per (ticker, day) for every fifth day, created at different times; the
    newer one (value 2) is what Feast takes. Created times are never after the day."""
    days = bars.iloc[::5]
    stamp = pd.to_datetime(days["date"]).dt.tz_localize("UTC").reset_index(drop=True)
    rows = [
        pd.DataFrame(
            {
                "ticker": days["ticker"].to_numpy(),
                "event_timestamp": stamp,
                "created": stamp - pd.Timedelta(hours=hours),
                "value": value,
            }
        )
        for hours, value in ((5, 1.0), (1, 2.0), (3, 1.5))
    ]
    return pd.concat(rows, ignore_index=True)


def _entity_rows(bars: pd.DataFrame) -> pd.DataFrame:
    """Every kind of entity row a user can ask for."""
    first, other = bars["ticker"].iloc[0], bars["ticker"].iloc[-1]
    day = pd.Timestamp
    rows = [
        (first, day("2024-03-04")),  # on a bar
        (first, day("2024-03-04")),  # the same row twice
        (first, day("2024-03-04 15:30")),  # between bars
        (first, day("2024-03-09")),  # a Saturday
        (first, day("2024-02-20")),  # in the gap: the last bar is older than the ttl
        (first, day("2024-02-14")),  # in the gap, still within the ttl
        (first, GAP[0] - pd.Timedelta(days=1) + pd.Timedelta(days=7)),  # ttl edge
        (first, day("2023-06-01")),  # before the first bar
        (first, day("2024-06-15")),  # long after the last bar
        ("ZZZZ", day("2024-03-04")),  # a ticker the store does not know
        (other, day("2024-01-02")),  # the first bar: features still warming up (nulls)
        (other, day("2024-04-30")),  # the last bar: no label yet
        (other, day("2024-04-15 23:59:59")),
    ]
    frame = pd.DataFrame(rows, columns=["ticker", "event_timestamp"])
    frame["event_timestamp"] = frame["event_timestamp"].dt.tz_localize("UTC")
    every_day = bars[bars["ticker"] == other][["ticker", "date"]].rename(
        columns={"date": "event_timestamp"}
    )
    every_day["event_timestamp"] = every_day["event_timestamp"].dt.tz_localize("UTC")
    return pd.concat([frame, every_day], ignore_index=True)


def _refs(store: Any) -> list[str]:
    views = [v for v in store.list_feature_views() if v.name != TIES_VIEW]
    features = [f"{v.name}:{f.name}" for v in views for f in v.features]
    return [ref for ref in features if ref != LABEL_REF] + [LABEL_REF]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns), kind="stable").reset_index(drop=True)


def _both(
    stores: dict[str, Any], entity_df: pd.DataFrame, refs: list[str], **options: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    ours = stores["ours"].get_historical_features(entity_df=entity_df, features=refs, **options)
    assert isinstance(ours, AsofRetrievalJob)
    feast = stores["feast"].get_historical_features(entity_df=entity_df, features=refs, **options)
    assert ours.to_arrow().schema == feast.to_arrow().schema
    return _sorted(ours.to_df()), _sorted(feast.to_df())


@pytest.mark.parametrize("full_feature_names", [False, True])
def test_same_rows_and_values_as_feasts_duckdb_store(
    stores: dict[str, Any], full_feature_names: bool
) -> None:
    entity_df = _entity_rows(stores["bars"])
    refs = _refs(stores["ours"])
    ours, feast = _both(stores, entity_df, refs, full_feature_names=full_feature_names)
    pd.testing.assert_frame_equal(ours, feast, check_exact=True)
    assert len(ours) == len(entity_df)
    first = stores["bars"]["ticker"].iloc[0]
    label = "training_labels__label_next_day_up" if full_feature_names else "label_next_day_up"
    feature = "price_returns__ret_1d" if full_feature_names else "ret_1d"
    in_gap = ours[(ours["ticker"] == first) & (ours["event_timestamp"] == "2024-02-20")]
    assert in_gap[[feature, label]].isna().all().all()  # the ttl expired
    known = ours[(ours["ticker"] == first) & (ours["event_timestamp"] == "2024-03-09")]
    assert known[feature].notna().all()  # a weekend row gets Friday's values
    assert ours[ours["ticker"] == "ZZZZ"][feature].isna().all()


def test_created_timestamp_breaks_ties_as_feast_does(stores: dict[str, Any]) -> None:
    entity_df = _entity_rows(stores["bars"])
    ours, feast = _both(stores, entity_df, [f"{TIES_VIEW}:value", "price_returns:ret_5d"])
    pd.testing.assert_frame_equal(ours, feast, check_exact=True)
    assert set(ours["value"].dropna()) == {2.0}  # the newest created row of each day


def test_extra_entity_columns_and_an_other_time_column_are_kept(stores: dict[str, Any]) -> None:
    entity_df = _entity_rows(stores["bars"]).rename(columns={"event_timestamp": "asked_at"})
    entity_df["request_id"] = range(len(entity_df))
    ours, feast = _both(stores, entity_df, ["risk_momentum:rsi_14", LABEL_REF])
    pd.testing.assert_frame_equal(ours, feast, check_exact=True)
    assert list(ours.columns) == ["ticker", "asked_at", "request_id", "rsi_14", "label_next_day_up"]


def test_entity_rows_as_a_duckdb_query_join_like_a_frame(stores: dict[str, Any]) -> None:
    snapshot = open_snapshot(stores["settings"])
    assert snapshot is not None
    query = (
        "SELECT ticker, CAST(date AS TIMESTAMPTZ) AS event_timestamp "
        f"FROM read_parquet('{snapshot.glob(ingest.BARS_FILE)}', hive_partitioning = false)"
    )
    frame = pd.DataFrame(stores["bars"][["ticker", "date"]]).rename(
        columns={"date": "event_timestamp"}
    )
    frame["event_timestamp"] = frame["event_timestamp"].dt.tz_localize("UTC")
    refs = _refs(stores["ours"])
    from_query = stores["ours"].get_historical_features(entity_df=query, features=refs)
    from_frame = stores["feast"].get_historical_features(entity_df=frame, features=refs)
    pd.testing.assert_frame_equal(
        _sorted(from_query.to_df()), _sorted(from_frame.to_df()), check_exact=True
    )
    assert from_query.metadata.max_event_timestamp == pd.Timestamp(END, tz="UTC")


def test_requests_it_does_not_cover_are_feasts_own_join(stores: dict[str, Any]) -> None:
    entity_df = _entity_rows(stores["bars"])
    job = stores["ours"].get_historical_features(
        entity_df=entity_df, features=[f"{TIES_VIEW}:value"], filter_by_created_timestamp=True
    )
    assert not isinstance(job, AsofRetrievalJob)
    feast = stores["feast"].get_historical_features(
        entity_df=entity_df, features=[f"{TIES_VIEW}:value"], filter_by_created_timestamp=True
    )
    pd.testing.assert_frame_equal(_sorted(job.to_df()), _sorted(feast.to_df()))


def test_entity_rows_as_a_query_for_a_join_it_does_not_cover_are_refused(
    stores: dict[str, Any],
) -> None:
    from mlops.errors import ConfigError

    with pytest.raises(ConfigError, match="pass the entity rows as a DataFrame"):
        stores["ours"].get_historical_features(
            entity_df="SELECT 'X' AS ticker, now() AS event_timestamp",
            features=[f"{TIES_VIEW}:value"],
            filter_by_created_timestamp=True,
        )


def test_a_join_reads_the_snapshot_current_named_when_it_was_asked(tmp_path: Path) -> None:
    (tmp_path / "snapshots" / "000001" / "bars.parquet").mkdir(parents=True)
    (tmp_path / "snapshots" / "000002").mkdir()
    os.symlink("snapshots/000001", tmp_path / CURRENT)
    glob = str(tmp_path / CURRENT / "bars.parquet" / "month=*" / "part.parquet")
    pinned: dict[Path, Path] = {}
    first = pinned_path(glob, pinned)
    (tmp_path / CURRENT).unlink()
    os.symlink("snapshots/000002", tmp_path / CURRENT)  # an ingest commits meanwhile
    assert pinned_path(glob, pinned) == first  # the same request: the same snapshot
    assert first == str(tmp_path / "snapshots/000001/bars.parquet/month=*/part.parquet")
    assert pinned_path(glob, {}) == first.replace("000001", "000002")  # the next request
    assert pinned_path("/elsewhere/x.parquet", pinned) == "/elsewhere/x.parquet"


def test_feature_store_yaml_loads_our_store_in_feast(stores: dict[str, Any]) -> None:
    from feast.repo_config import load_repo_config

    from mlops.features.offline_store import SnapshotOfflineStoreConfig
    from mlops.features.store import write_feature_store_yaml

    settings: Settings = stores["settings"]
    path = write_feature_store_yaml(settings)
    config = load_repo_config(settings.feast_dir, path)
    assert isinstance(config.offline_store, SnapshotOfflineStoreConfig)


def test_the_feast_command_line_works_with_the_written_configuration(
    stores: dict[str, Any],
) -> None:
    import subprocess
    import sys

    from mlops.features.store import write_feature_store_yaml

    settings: Settings = stores["settings"]
    write_feature_store_yaml(settings)
    feast = [str(Path(sys.executable).parent / "feast"), "-c", str(settings.feast_dir)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*feast, *args], capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    assert "price_returns" in run("feature-views", "list").stdout
    # Materialization reads the offline store (Feast's DuckDB reads, inherited).
    run("materialize", "2024-04-01T00:00:00", "2024-05-01T00:00:00", "--views", "price_returns")
    online = (
        stores["ours"]
        .get_online_features(
            features=["price_returns:ret_1d"],
            entity_rows=[{"ticker": stores["bars"]["ticker"].iloc[-1]}],
        )
        .to_dict()
    )
    assert online["ret_1d"][0] is not None


def test_a_join_saved_as_a_feast_dataset_holds_its_rows(
    stores: dict[str, Any], tmp_path: Path
) -> None:
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

    entity_df = _entity_rows(stores["bars"])
    job = stores["ours"].get_historical_features(entity_df=entity_df, features=[LABEL_REF])
    storage = SavedDatasetFileStorage(path=str(tmp_path / "saved.parquet"))
    stores["ours"].create_saved_dataset(from_=job, name="saved", storage=storage)
    saved = pd.read_parquet(tmp_path / "saved.parquet")
    pd.testing.assert_frame_equal(_sorted(saved), _sorted(job.to_df()))
