"""The REST API over a real ingested store: reads, writes, auth and errors."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.support.ingest import read_offline

from mlops.app import create_app
from mlops.settings import Settings

API = "/api/v1"


@pytest.fixture(scope="module")
def client(ingested: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(ingested), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def auth(ingested: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {ingested.token}"}


def _error(response) -> dict:  # type: ignore[no-untyped-def,type-arg]
    body = response.json()
    assert set(body["error"]) >= {"code", "message", "details"}
    return body["error"]


def test_list_features_filters_search_and_pages(client: TestClient) -> None:
    everything = client.get(f"{API}/features", params={"page_size": 500}).json()
    names = [f["name"] for f in everything["items"]]
    assert everything["total"] == 9 and "ret_1d" in names and "label_next_day_up" in names
    assert all(f["latest_version"] == 1 for f in everything["items"])
    ints = client.get(f"{API}/features", params={"type": "int64"}).json()
    assert [f["name"] for f in ints["items"]] == ["label_next_day_up"]
    found = client.get(f"{API}/features", params={"q": "RSI"}).json()
    assert [f["name"] for f in found["items"]] == ["rsi_14"]
    view = client.get(f"{API}/features", params={"view": "price_returns"}).json()
    assert {f["name"] for f in view["items"]} == {"ret_1d", "ret_5d", "ret_20d"}
    page2 = client.get(f"{API}/features", params={"page": 2, "page_size": 4}).json()
    assert page2["items"] == everything["items"][4:8]
    future = client.get(f"{API}/features", params={"updated_after": "2200-01-01T00:00:00"})
    assert future.json()["total"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"type": "decimal"},
        {"page": 0},
        {"page_size": 100000},
        {"updated_after": "yesterday"},
        {"updated_after": "2025-02-01T00:00:00", "updated_before": "2025-01-01T00:00:00"},
    ],
)
def test_invalid_filters_are_422(client: TestClient, params: dict[str, object]) -> None:
    response = client.get(f"{API}/features", params=params)
    assert response.status_code == 422
    assert _error(response)["code"] == "invalid_input"


def test_feature_detail_has_stored_statistics_and_samples(
    client: TestClient, ingested: Settings
) -> None:
    detail = client.get(f"{API}/features/risk_momentum:rsi_14").json()
    assert detail["dtype"] == "Float64" and detail["feature_view"] == "risk_momentum"
    values = read_offline(ingested, "daily_features.parquet")["rsi_14"]
    stats = detail["statistics"]
    assert stats["count"] == len(values) and stats["nulls"] == int(values.isna().sum())
    assert stats["mean"] == pytest.approx(values.mean())
    assert stats["quantiles"]["p50"] == pytest.approx(values.median())
    assert sum(stats["histogram"]["counts"]) == values.notna().sum()
    assert len(detail["samples"]) == 10 and detail["versions"][0]["version"] == 1


def test_unknown_feature_and_version_are_404(client: TestClient) -> None:
    assert client.get(f"{API}/features/nope").status_code == 404
    response = client.get(f"{API}/features/ret_1d", params={"version": 9})
    assert response.status_code == 404 and "no version 9" in _error(response)["message"]
    assert client.get(f"{API}/feature-views/nope/versions").status_code == 404
    diff = client.get(f"{API}/feature-views/price_returns/diff", params={"from": 1, "to": 5})
    assert diff.status_code == 404


def test_versions_and_diff(client: TestClient) -> None:
    versions = client.get(f"{API}/features/ret_1d/versions").json()
    assert versions[0]["view_name"] == "price_returns" and versions[0]["author"] == "tester"
    diff = client.get(f"{API}/feature-views/price_returns/diff", params={"from": 1, "to": 1})
    assert diff.json()["features"] == [] and diff.json()["unified"] == ""
    views = client.get(f"{API}/feature-views").json()
    assert {v["name"] for v in views} == {
        "price_returns",
        "risk_momentum",
        "volume_signals",
        "training_labels",
    }


def test_mutations_need_a_valid_token(client: TestClient) -> None:
    body = {"version": 1}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        response = client.post(
            f"{API}/feature-views/price_returns/rollback", json=body, headers=headers
        )
        assert response.status_code == 401
        assert _error(response)["code"] == "unauthorized"
    response = client.post(f"{API}/datasets", json={"name": "x"})
    assert response.status_code == 401


def test_rollback_to_the_active_definition_is_409(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        f"{API}/feature-views/price_returns/rollback", json={"version": 1}, headers=auth
    )
    assert response.status_code == 409


def test_dataset_create_list_and_download(client: TestClient, auth: dict[str, str]) -> None:
    body = {
        "name": "api-ds",
        "features": ["ret_1d", "risk_momentum:rsi_14"],
        "tickers": ["BUCI", "HEX"],
        "start": "2024-03-01",
        "end": "2024-06-28",
    }
    created = client.post(f"{API}/datasets", json=body, headers=auth)
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["features"] == ["price_returns:ret_1d", "risk_momentum:rsi_14"]
    assert info["feature_versions"] == {
        "price_returns": 1,
        "risk_momentum": 1,
        "training_labels": 1,
    }
    assert info["tickers"] == ["BUCI", "HEX"] and info["created_by"] == "admin"
    assert any(d["name"] == "api-ds" for d in client.get(f"{API}/datasets").json())
    parquet = client.get(f"{API}/datasets/api-ds/download")
    frame = pd.read_parquet(io.BytesIO(parquet.content))
    assert len(frame) == info["rows"]
    assert set(frame.columns) >= {
        "ticker",
        "event_timestamp",
        "ret_1d",
        "rsi_14",
        "label_next_day_up",
    }
    assert frame["event_timestamp"].min() >= pd.Timestamp("2024-03-01", tz="UTC")
    csv = client.get(f"{API}/datasets/api-ds/download", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(pd.read_csv(io.StringIO(csv.text))) == info["rows"]
    again = client.post(f"{API}/datasets", json=body, headers=auth)
    assert again.status_code == 409


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "x" * 200])
def test_dataset_names_that_escape_are_400(
    client: TestClient, auth: dict[str, str], name: str
) -> None:
    response = client.post(f"{API}/datasets", json={"name": name}, headers=auth)
    assert response.status_code == 400
    assert _error(response)["code"] == "unsafe_path"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x\n"},
        {"name": "x "},
        {"name": "x\ty"},
        {"name": "ok", "tickers": ["BUCI\n"]},
        {"name": "ok", "tickers": ["BUCI "]},
        {"name": "ok", "features": ["ret_1d\n"]},
    ],
)
def test_names_with_whitespace_or_control_characters_are_422(
    client: TestClient, auth: dict[str, str], body: dict[str, object]
) -> None:
    response = client.post(f"{API}/datasets", json=body, headers=auth)
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "invalid_input" and "invalid" in error["message"]
    assert client.get(f"{API}/datasets/ok").status_code == 404  # nothing was created


def test_a_dataset_named_with_a_newline_is_refused_on_read(client: TestClient) -> None:
    for path in ("/datasets/x%0A", "/datasets/x%0A/download", "/datasets/x%20"):
        response = client.get(f"{API}{path}")
        assert response.status_code == 422, path
        assert (
            "leading or trailing whitespace" in _error(response)["message"]
            or "control" in (_error(response)["message"])
        )


def test_dataset_download_path_escape_is_refused(client: TestClient) -> None:
    assert client.get(f"{API}/datasets/..%2F..%2Fmlops.db/download").status_code in (400, 404)
    assert client.get(f"{API}/datasets/..secret/download").status_code == 400


def test_dataset_bad_requests(client: TestClient, auth: dict[str, str]) -> None:
    unknown = client.post(
        f"{API}/datasets", json={"name": "d1", "features": ["nope"]}, headers=auth
    )
    assert unknown.status_code == 404
    ticker = client.post(f"{API}/datasets", json={"name": "d2", "tickers": ["ZZZZ"]}, headers=auth)
    assert ticker.status_code == 404
    empty = client.post(
        f"{API}/datasets",
        json={"name": "d3", "start": "1990-01-01", "end": "1990-02-01"},
        headers=auth,
    )
    assert empty.status_code == 422
    assert client.get(f"{API}/datasets/none-such/download").status_code == 404


def test_online_features_endpoint(client: TestClient) -> None:
    response = client.get(
        f"{API}/online-features",
        params={"tickers": "BUCI,HEX", "feature_service": "model_features"},
    )
    body = response.json()
    assert body["ticker"] == ["BUCI", "HEX"] and len(body) == 9
    assert client.get(f"{API}/online-features", params={"tickers": ""}).status_code == 422


def test_health_request_id_and_openapi(client: TestClient) -> None:
    health = client.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert health.status_code == 200 and health.headers["X-Request-ID"] == "abc123"
    assert set(health.json()["components"]) == {
        "metadata_db",
        "mlflow_tracking",
        "feast_registry",
        "offline_store",
        "online_store",
    }
    assert client.get(f"{API}/openapi.json").json()["info"]["title"] == "MLOps platform"
    error = client.get(f"{API}/features/nope")
    assert error.json()["error"]["request_id"] == error.headers["X-Request-ID"]


def test_health_reports_a_missing_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.settings import make_settings

    with TestClient(create_app(make_settings(tmp_path / "empty"))) as empty:
        response = empty.get("/healthz")
    assert response.status_code == 503
    assert response.json()["components"]["offline_store"]["status"] == "down"


def test_unexpected_errors_are_json_without_a_trace(
    ingested: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops.features import catalog

    def broken(*_args: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(catalog, "list_features", broken)
    with TestClient(create_app(ingested), raise_server_exceptions=False) as test_client:
        response = test_client.get(f"{API}/features", headers={"X-Request-ID": "r-500"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "r-500"
    assert _error(response)["code"] == "internal_error"
    assert "secret internals" not in response.text
