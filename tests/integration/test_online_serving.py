"""Online features and predictions resolve their definitions once per change, on a real
Feast registry and MLflow registry: a change made by another process is served by the
next request, an unchanged registry is not read again, and bad requests still fail clearly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.support.ingest import read_offline
from tests.support.registered_models import add_version, copy_version
from tests.support.waiting import wait_for

from mlops.app import create_app
from mlops.errors import InvalidInputError, NotFoundError
from mlops.features import serving as features_serving
from mlops.features.serving import (
    INLINE_MAX_TICKERS,
    answers_inline,
    online_features,
    serving_catalog,
)
from mlops.features.store import feature_store_config, open_store
from mlops.lifecycle import alias_moves, gates, mlflow_backend, registry
from mlops.settings import Settings

PREDICT = "/api/v1/ml/models/{}/predict"
ONLINE = "/api/v1/online-features"


def _other_process_store(settings: Settings) -> Any:
    """A FeatureStore of its own on the same registry, as another process opens it."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    config = RepoConfig(**feature_store_config(settings))
    config.repo_path = settings.feast_dir
    return FeatureStore(repo_path=str(settings.feast_dir), config=config)


def test_a_service_applied_by_another_process_is_served_by_the_next_lookup(
    fresh: Settings,
) -> None:
    from feast import FeatureService

    assert set(online_features(fresh, ["BUCI"], [], None)) > {"ticker", "ret_1d", "rsi_14"}
    with pytest.raises(NotFoundError, match="Unknown feature service 'momentum'"):
        online_features(fresh, ["BUCI"], [], "momentum")

    other = _other_process_store(fresh)
    momentum = FeatureService(
        name="momentum", features=[other.get_feature_view("risk_momentum")[["mom_10d"]]]
    )
    other.apply([momentum])
    assert set(online_features(fresh, ["BUCI"], [], "momentum")) == {"ticker", "mom_10d"}

    other.delete_feature_service("momentum")
    with pytest.raises(NotFoundError, match="Unknown feature service 'momentum'"):
        online_features(fresh, ["BUCI"], [], "momentum")


def test_a_view_made_offline_by_another_process_is_refused_by_the_next_lookup(
    fresh: Settings,
) -> None:
    assert online_features(fresh, ["BUCI"], ["vol_20d"], None)["vol_20d"][0] is not None
    other = _other_process_store(fresh)
    view = other.get_feature_view("risk_momentum")
    view.online = False
    other.apply([view])
    with pytest.raises(NotFoundError, match="Not served online: risk_momentum:vol_20d"):
        online_features(fresh, ["BUCI"], ["vol_20d"], None)
    with pytest.raises(NotFoundError, match="risk_momentum:mom_10d"):
        online_features(fresh, ["BUCI"], [], "model_features")


def test_unchanged_definitions_are_neither_resolved_nor_read_again(
    ingested: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(ingested)
    store.refresh_registry()  # the cache is fresh for `cache_ttl_seconds` from here
    first = serving_catalog(ingested)
    registry_before = store.registry.cached_registry_proto

    def fail(*args: Any) -> None:
        raise AssertionError("resolved again")

    monkeypatch.setattr(features_serving, "_build_catalog", fail)
    for features, service in (([], None), ([], "model_features"), (["ret_1d", "rsi_14"], None)):
        online_features(ingested, ["BUCI", "HEX"], features, service)
    assert serving_catalog(ingested) is first
    assert store.registry.cached_registry_proto is registry_before


def test_bad_lookups_are_refused_and_do_not_change_what_is_served(ingested: Settings) -> None:
    served = online_features(ingested, ["BUCI"], [], None)
    with pytest.raises(NotFoundError, match="Unknown feature service 'nope'"):
        online_features(ingested, ["BUCI"], [], "nope")
    with pytest.raises(NotFoundError, match="Unknown feature 'nope'"):
        online_features(ingested, ["BUCI"], ["nope"], None)
    with pytest.raises(NotFoundError, match="Not served online: training_labels"):
        online_features(ingested, ["BUCI"], ["label_next_day_up"], None)
    with pytest.raises(InvalidInputError, match="at least one ticker"):
        online_features(ingested, [], [], None)
    assert online_features(ingested, ["BUCI"], [], None) == served


# ------------------------------------------------------------------------ predictions


@pytest.fixture(scope="module")
def settings(lifecycle: dict[str, Any]) -> Settings:
    """Aliases moved outside the platform go unseen for an hour: only the platform's
    count of moves can make a prediction ask MLflow again."""
    return lifecycle["settings"].model_copy(update={"alias_recheck_s": 3600.0})


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def ticker(settings: Settings) -> str:
    return str(read_offline(settings, "bars.parquet")["ticker"].iloc[0])


def _served_version(client: TestClient, name: str, ticker: str, stage: str = "production") -> str:
    response = client.post(PREDICT.format(name), json={"tickers": [ticker], "stage": stage})
    assert response.status_code == 200, response.text
    return str(response.json()["version"])


def _move_alias_as_another_process(settings: Settings, name: str, alias: str, to: str) -> None:
    """What a deployment's alias stage does, through objects of its own."""
    other = settings.model_copy()
    mlflow_backend.client(other).set_registered_model_alias(name, alias, to)
    alias_moves.record_move(other, name)


def test_predictions_ask_mlflow_only_when_the_platform_moved_an_alias(
    client: TestClient, settings: Settings, ticker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = copy_version(settings, "1")
    second = add_version(settings, name, "2")
    _move_alias_as_another_process(settings, name, "production", "1")
    assert _served_version(client, name, ticker) == "1"

    asked: list[str] = []
    alias_version = registry.alias_version

    def counted(*args: Any) -> str | None:
        asked.append(args[2])
        return alias_version(*args)

    monkeypatch.setattr(registry, "alias_version", counted)
    for _ in range(3):
        assert _served_version(client, name, ticker) == "1"
    assert asked == []

    _move_alias_as_another_process(settings, name, "production", second)
    assert _served_version(client, name, ticker) == second
    assert asked == ["production"]
    _move_alias_as_another_process(settings, name, "staging", "1")
    assert _served_version(client, name, ticker, "staging") == "1"
    assert _served_version(client, name, ticker) == second


def test_predictions_are_the_pyfunc_answers_of_the_version_behind_the_alias(
    client: TestClient, settings: Settings, ticker: str
) -> None:
    name = copy_version(settings, "1")  # logistic regression
    second = add_version(settings, name, "2")  # gradient boosting
    served = []
    for version in ("1", second, "1"):
        _move_alias_as_another_process(settings, name, "production", version)
        response = client.post(PREDICT.format(name), json={"tickers": [ticker]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["version"] == version
        frame = pd.DataFrame(body["features"])
        expected = gates.probabilities(registry.load_version(settings, name, version), frame)
        served.append(body["predictions"][0]["probability_up"])
        assert served[-1] == float(expected[0])
    assert served[0] != served[1] and served[0] == served[2]


def test_lookups_answered_on_the_event_loop_or_in_a_thread_answer_alike(
    client: TestClient, settings: Settings
) -> None:
    tickers = sorted(set(read_offline(settings, "bars.parquet")["ticker"]))[:3]
    many = (tickers * (INLINE_MAX_TICKERS // len(tickers) + 1))[: INLINE_MAX_TICKERS + 1]
    params = {"feature_service": "model_features"}
    alone = [client.get(ONLINE, params={**params, "tickers": t}).json() for t in tickers]
    together = client.get(ONLINE, params={**params, "tickers": ",".join(many)}).json()
    # The store is open now: one ticker is answered on the loop, the many in a thread.
    assert answers_inline(settings, 1) and not answers_inline(settings, len(many))
    production = settings.model_copy(update={"profile": "production"})
    assert not answers_inline(production, 1)  # Redis and PostgreSQL: never on the loop
    for i, ticker in enumerate(many):
        assert {k: v[i] for k, v in together.items()} == {
            k: v[0] for k, v in alone[tickers.index(ticker)].items()
        }

    name = copy_version(settings, "1")
    _move_alias_as_another_process(settings, name, "production", "1")
    by_one = [
        client.post(PREDICT.format(name), json={"tickers": [t]}).json()["predictions"][0]
        for t in tickers
    ]
    response = client.post(PREDICT.format(name), json={"tickers": many})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == by_one


def test_an_alias_moved_outside_the_platform_is_served_within_the_recheck_time(
    client: TestClient, settings: Settings, ticker: str
) -> None:
    name = copy_version(settings, "1")
    second = add_version(settings, name, "2")
    _move_alias_as_another_process(settings, name, "production", "1")
    assert _served_version(client, name, ticker) == "1"
    mlflow_backend.client(settings).set_registered_model_alias(name, "production", second)
    assert _served_version(client, name, ticker) == "1", "unseen before the recheck time"

    quick = settings.model_copy(update={"alias_recheck_s": 0.2})
    with TestClient(create_app(quick), raise_server_exceptions=False) as quick_client:
        wait_for(
            lambda: _served_version(quick_client, name, ticker) == second,
            timeout=30,
            what="the moved alias to be served",
        )


def test_an_alias_removed_by_another_process_stops_the_predictions(
    client: TestClient, settings: Settings, ticker: str
) -> None:
    name = copy_version(settings, "1")
    _move_alias_as_another_process(settings, name, "production", "1")
    assert _served_version(client, name, ticker) == "1"
    mlflow_backend.client(settings).delete_registered_model_alias(name, "production")
    alias_moves.record_move(settings.model_copy(), name)
    response = client.post(PREDICT.format(name), json={"tickers": [ticker]})
    assert response.status_code == 404 and "no production version" in response.text
