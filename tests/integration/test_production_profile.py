"""The production profile for real: metadata and Feast registry in PostgreSQL, online
store in Redis (both on 127.0.0.1). Each test run uses its own database and project."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.ingest import read_offline, run_ingest_flow
from tests.support.postgres import postgres_databases
from tests.support.settings import DEMO

from mlops.features import ingest
from mlops.features.serving import online_features
from mlops.features.store import forget_store
from mlops.settings import Settings

pytestmark = [pytest.mark.production, pytest.mark.slow]
REDIS = "127.0.0.1:6379"


@pytest.fixture()
def production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None
) -> Iterator[Settings]:
    import redis

    from mlops.db import engine_for
    from mlops.lifecycle import mlflow_backend

    name = f"mlops_test_{uuid.uuid4().hex[:10]}"
    with postgres_databases(name, f"{name}_mlflow") as (url, mlflow_url):
        monkeypatch.setenv("MLOPS_PROFILE", "production")
        settings = Settings(
            home=tmp_path / "home",
            metadata_db_url=url,
            feast_registry_url=url,
            redis_url=REDIS,
            mlflow_tracking_uri=mlflow_url,
            feast_project=name,
            api_token="prod-token",
            **DEMO,
        )
        settings.ensure_dirs()
        yield settings
        forget_store(settings)
        engine_for(url).dispose()
        mlflow_backend.tracking_engine(settings).dispose()
        mlflow_backend.forget_clients()
        client = redis.Redis(host="127.0.0.1", port=6379)
        for key in client.scan_iter(match=f"*{name}*".encode()):
            client.delete(key)


def test_ingest_and_online_read_on_postgres_and_redis(production: Settings) -> None:
    import redis
    from sqlalchemy import create_engine, inspect

    result = run_ingest_flow(production, message="production load")
    assert len(result.new_versions) == 4
    tables = set(inspect(create_engine(production.metadata_url)).get_table_names())
    assert {"feature_view_versions", "feature_statistics", "feature_views"} <= tables
    keys = list(
        redis.Redis(host="127.0.0.1", port=6379).scan_iter(
            match=f"*{production.feast_project}*".encode()
        )
    )
    tickers = sorted(read_offline(production, ingest.BARS_FILE)["ticker"].unique())
    assert len(keys) == len(tickers)
    served = online_features(production, tickers, [], "model_features")
    features = read_offline(production, ingest.FEATURES_FILE)
    latest = features.sort_values("event_timestamp").groupby("ticker").last()
    assert served["rsi_14"] == pytest.approx([latest.loc[t, "rsi_14"] for t in tickers])


def test_production_reads_need_the_token(production: Settings) -> None:
    from fastapi.testclient import TestClient

    from mlops.app import create_app

    run_ingest_flow(production)
    with TestClient(create_app(production)) as client:
        assert client.get("/api/v1/features").status_code == 401
        response = client.get("/api/v1/features", headers={"Authorization": "Bearer prod-token"})
        assert response.status_code == 200 and response.json()["total"] == 9
        for path in ("/docs", "/api/v1/openapi.json"):
            assert client.get(path).status_code == 401, path
            token = {"Authorization": "Bearer prod-token"}
            assert client.get(path, headers=token).status_code == 200, path
        health = client.get("/healthz").json()
        assert health["components"]["online_store"]["status"] == "ok"


def test_mlflow_on_postgres_trains_lists_deploys_and_predicts(production: Settings) -> None:
    """MLflow's tracking store in PostgreSQL: a training run, the experiment summaries and
    registry read from its tables, the deploy flow through all stages, a prediction."""
    from fastapi.testclient import TestClient
    from sqlalchemy import create_engine, inspect

    from mlops.app import create_app
    from mlops.lifecycle import training

    run_ingest_flow(production)
    config = training.get_model_config(production, "logistic_regression")
    trained = training.train_model(production, config, "tester")
    tables = set(inspect(create_engine(production.tracking_uri)).get_table_names())
    assert {"experiments", "runs", "latest_metrics", "registered_model_aliases"} <= tables
    auth = {"Authorization": "Bearer prod-token"}
    with TestClient(create_app(production)) as client:
        experiments = client.get(
            "/api/v1/ml/experiments", params={"sort": "metric:roc_auc"}, headers=auth
        ).json()
        item = next(i for i in experiments["items"] if i["name"] == config.experiment)
        assert item["run_count"] == 1 and item["latest_run_id"] == trained.run_id
        assert item["best"]["value"] == pytest.approx(trained.metrics["roc_auc"])
        assert item["updated"] >= item["created"]
        deployed = client.post(
            f"/api/v1/ml/models/{trained.model_name}/deploy",
            params={"wait": True},
            json={"version": trained.model_version},
            headers=auth,
        ).json()
        assert deployed["status"] == "succeeded", deployed["error"]
        models = client.get("/api/v1/ml/models", params={"stage": "Production"}, headers=auth)
        (model,) = models.json()["items"]
        assert model["production_version"] == trained.model_version
        tickers = sorted(read_offline(production, ingest.BARS_FILE)["ticker"].unique())
        predicted = client.post(
            f"/api/v1/ml/models/{trained.model_name}/predict",
            json={"tickers": tickers},
            headers=auth,
        )
        assert predicted.status_code == 200, predicted.text
        assert len(predicted.json()["predictions"]) == len(tickers)
        _evaluations_on_postgres(client, auth, deployed, trained.model_name)


def _evaluations_on_postgres(
    client: Any, auth: dict[str, str], deployed: dict[str, Any], model: str
) -> None:
    """The suite gate of the deployment and an evaluation run, recorded in PostgreSQL."""
    gates = {g["name"]: g for g in deployed["stages"][0]["gates"]}
    assert gates["suite:smoke"]["passed"], gates["suite:smoke"]["message"]
    body = {"suites": ["standard"], "models": [{"name": model, "alias": "production"}]}
    result = client.post(
        "/api/v1/evaluation/run", params={"wait": True}, json=body, headers=auth
    ).json()
    assert result["status"] == "succeeded" and result["progress"]["done"] == 2
    assert len(result["results"][0]["tests"]) == 9 and result["explained"]
    listed = client.get("/api/v1/evaluation/benchmarks", headers=auth).json()
    last = {b["name"]: b["last_run"] for b in listed}
    assert last["standard"]["evaluation_id"] == result["id"]
    assert last["smoke"]["evaluation_id"] == gates["suite:smoke"]["details"]["evaluation_id"]
    assert last["stress"] is None


def test_secrets_stay_out_of_files_flow_parameters_and_output(production: Settings) -> None:
    """A database password and the API token appear in no file others can read, in no
    Prefect flow-run parameter (the Prefect UI shows those) and in nothing printed."""
    import asyncio
    import stat

    from prefect.client.orchestration import get_client

    password = "Pw-" + uuid.uuid4().hex  # PostgreSQL on 127.0.0.1 trusts, and ignores it
    with_password = {
        name: getattr(production, name).replace("postgres@", f"postgres:{password}@")
        for name in ("metadata_db_url", "feast_registry_url", "mlflow_tracking_uri")
    }
    settings = production.model_copy(update=with_password)
    assert password in settings.metadata_url
    run_ingest_flow(settings, message="with a password")
    yaml_file = settings.feast_dir / "feature_store.yaml"
    assert password not in yaml_file.read_text()
    assert "${MLOPS_FEAST_REGISTRY_URL}" in yaml_file.read_text()
    assert stat.S_IMODE(yaml_file.stat().st_mode) == 0o600

    run = ingest.latest_runs(settings, limit=1)[0]
    assert run.status == "completed" and run.flow_run_id

    async def parameters() -> dict[str, Any]:
        async with get_client() as client:
            return (await client.read_flow_run(uuid.UUID(run.flow_run_id))).parameters

    shown = str(asyncio.run(parameters()))
    assert password not in shown and "prod-token" not in shown
    assert "postgres:***@" in shown
    assert "prod-token" not in settings.token_hint and "MLOPS_API_TOKEN" in settings.token_hint
    assert password not in settings.model_dump_json()
