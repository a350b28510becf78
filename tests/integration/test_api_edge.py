"""The API's edge: the token and the body size are checked before a body is read, absurd
parameters are 4xx rather than 500s, 405s say what is allowed, timestamps carry their zone,
and the OpenAPI document follows the read rule."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.support.console_pages import csrf
from tests.support.settings import make_settings

from mlops.app import create_app
from mlops.settings import Settings

API = "/api/v1"
MiB = 1024**2


@pytest.fixture(scope="module")
def app(ingested: Settings) -> FastAPI:
    return create_app(ingested)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def auth(ingested: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {ingested.token}"}


class Upload:
    """An ASGI `receive` sending `chunks` pieces of `chunk` bytes; counts how often the app
    asked for more. The same bytes object is sent each time: the test itself holds one."""

    def __init__(self, chunk: bytes, chunks: int) -> None:
        self.chunk, self.chunks, self.calls = chunk, chunks, 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.calls > self.chunks:
            return {"type": "http.disconnect"}
        more = self.calls < self.chunks
        return {"type": "http.request", "body": self.chunk, "more_body": more}


def _post(app: FastAPI, path: str, upload: Upload, headers: dict[str, str]) -> tuple[int, bytes]:
    """One POST straight into the ASGI app: status and body of its answer."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, upload, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


CHUNKED = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}


def test_an_anonymous_300_mb_post_is_refused_before_its_body_is_read(app: FastAPI) -> None:
    upload = Upload(b"x" * MiB, chunks=300)
    status, body = _post(app, f"{API}/datasets", upload, CHUNKED)
    assert status == 401 and b'"code":"unauthorized"' in body
    assert upload.calls == 0
    wrong = Upload(b"x" * MiB, chunks=300)
    status, _ = _post(app, f"{API}/datasets", wrong, {**CHUNKED, "Authorization": "Bearer no"})
    assert status == 401 and wrong.calls == 0


def test_a_body_over_the_limit_is_413_read_no_further_than_the_limit(
    app: FastAPI, ingested: Settings, auth: dict[str, str]
) -> None:
    limit = ingested.api_max_body_bytes
    chunk = 64 * 1024
    upload = Upload(b"x" * chunk, chunks=300 * MiB // chunk)
    status, body = _post(app, f"{API}/datasets", upload, {**CHUNKED, **auth})
    assert status == 413 and b'"code":"payload_too_large"' in body
    assert upload.calls == limit // chunk + 1

    declared = Upload(b"x" * chunk, chunks=1)
    headers = {"Content-Type": "application/json", "Content-Length": str(300 * MiB), **auth}
    status, _ = _post(app, f"{API}/datasets", declared, headers)
    assert status == 413 and declared.calls == 0


def test_a_chunked_body_within_the_limit_reaches_the_route(
    app: FastAPI, auth: dict[str, str]
) -> None:
    request = b'{"name": "twice", "features": ["ret_1d", "price_returns:ret_1d"]}'
    status, body = _post(app, f"{API}/datasets", Upload(request, chunks=1), {**CHUNKED, **auth})
    assert status == 422 and b"more than once: price_returns:ret_1d" in body


def test_console_forms_are_bounded_too(client: TestClient, ingested: Settings) -> None:
    too_big = "x" * (ingested.console_max_form_bytes + 1)
    response = client.post("/signin", data={"token": too_big})
    assert response.status_code == 413


@pytest.mark.parametrize(
    "path",
    [
        f"{API}/ml/deployments?offset=9223372036854775808",
        f"{API}/evaluation/results?offset=9223372036854775808",
        f"{API}/ml/experiments?page=99999999999999999999",
        f"{API}/ml/models?page=99999999999999999999",
        f"{API}/features?page=9223372036854775808",
        f"{API}/features/ret_1d?version=9223372036854775808",
        f"{API}/features?updated_after=0001-01-01T00:00:00",
        f"{API}/prompt-governance/templates/market_summary/usage?start=0001-01-01T00:00:00",
        f"{API}/prompt-governance/templates/market_summary/usage?end=9999-12-31T23:59:59",
    ],
)
def test_out_of_range_parameters_are_422(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"start": "1170-01-01"}, "start: Value error, must be between 1900-01-01"),
        ({"end": "1170-01-01"}, "end: Value error, must be between 1900-01-01"),
        ({"features": ["rsi_14", "rsi_14"]}, "more than once: risk_momentum:rsi_14"),
        ({"features": ["label_next_day_up"]}, "more than once: training_labels:label_next"),
    ],
)
def test_impossible_dataset_requests_are_422(
    client: TestClient, auth: dict[str, str], body: dict[str, Any], message: str
) -> None:
    response = client.post(f"{API}/datasets", json={"name": "bad", **body}, headers=auth)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]


CONSOLE_FORMS = [
    "/evaluation/run",
    "/features/views/price_returns/rollback",
    "/datasets",
    "/experiments",
    "/models/m/deploy",
    "/models/m/rollback",
    "/deployments/d/rollback",
    "/prompts/_new",
    "/prompts/p/edit",
    "/prompts/_preview",
    "/prompts/p/publish",
    "/prompts/p/rollback",
]


@pytest.mark.parametrize("form", CONSOLE_FORMS)
def test_a_non_ascii_csrf_value_is_refused_like_a_wrong_one(client: TestClient, form: str) -> None:
    csrf(client, "/evaluation")  # the session now holds a CSRF token
    for value in ("é", "\u200b", "日本"):
        response = client.post(form, data={"csrf": value, "version": "1"})
        assert response.status_code == 401, (form, value)
        assert "The form has expired" in response.text


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", f"{API}/datasets", "GET, POST"),
        ("DELETE", f"{API}/prompt-governance/templates/x", "GET, PUT"),
        ("TRACE", "/healthz", "GET"),
    ],
)
def test_405_lists_every_method_of_the_path(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405 and response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == "http_error"


def test_timestamps_are_sent_and_documented_in_utc(client: TestClient) -> None:
    versions = client.get(f"{API}/features/ret_1d/versions").json()
    assert versions and all(v["created_at"].endswith("+00:00") for v in versions)
    views = client.get(f"{API}/feature-views").json()
    assert views and all(v["updated"].endswith("+00:00") for v in views)
    schema = client.get(f"{API}/openapi.json").json()
    created = schema["components"]["schemas"]["DatasetInfo"]["properties"]["created_at"]
    assert created == {"type": "string", "format": "date-time", "title": "Created At"}


def test_every_route_documents_its_errors_with_the_error_body(client: TestClient) -> None:
    schema = client.get(f"{API}/openapi.json").json()
    for path, operations in schema["paths"].items():
        if not path.startswith(API):
            continue
        for method, operation in operations.items():
            errors = {code for code in operation["responses"] if code.startswith("4")}
            assert {"401", "404", "422"} <= errors, (method, path)
            if method in ("post", "put"):
                assert {"409", "413"} <= errors, (method, path)
            body = operation["responses"]["422"]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/ErrorBody"}


def test_the_gate_knows_every_route_of_the_api(app: FastAPI, client: TestClient) -> None:
    schema = client.get(f"{API}/openapi.json").json()
    table = app.state.routes
    for path, operations in schema["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method in operations:
            policy = table.policy(method.upper(), concrete)
            assert policy is not table.default, (method, path)
            if path.startswith(API):
                assert policy.is_read or policy.needs_token, (method, path)


def test_docs_and_reads_follow_the_read_rule(ingested: Settings) -> None:
    closed = make_settings(ingested.home, reads_require_auth=True)
    token = {"Authorization": f"Bearer {closed.token}"}
    app = create_app(closed)
    with TestClient(app) as client:
        for path in ("/docs", f"{API}/openapi.json"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers=token).status_code == 200, path
    upload = Upload(b"x" * MiB, chunks=300)  # a read with a body: refused before it is read
    status, _ = _post(app, f"{API}/ml/models/m/predict", upload, CHUNKED)
    assert status == 401 and upload.calls == 0
