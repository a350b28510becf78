"""The console's feature store section through the platform's app: the catalog's filters,
search and pages, a feature's statistics, histogram and sample rows, a view's timeline and
side-by-side diff, a confirmed rollback (signed in, CSRF), and datasets built from ticked
features with their download links; bad input is shown inline and changes nothing."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.support.console_pages import csrf, sign_in
from tests.support.ingest import run_ingest_flow
from tests.support.settings import make_settings

from mlops.app import create_app
from mlops.db import session_scope
from mlops.features.catalog import feature_detail
from mlops.features.datasets import list_datasets
from mlops.features.versions import list_versions
from mlops.settings import PROJECT_ROOT, Settings

ALERT = re.compile(r'<p class="error" role="alert"[^>]*>(.*?)</p>', re.S)
ALL_FEATURES = (
    "ret_1d",
    "ret_5d",
    "ret_20d",
    "vol_20d",
    "mom_10d",
    "mom_20d",
    "rsi_14",
    "volume_zscore_20d",
    "label_next_day_up",
)


@pytest.fixture
def client(ingested: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(ingested), raise_server_exceptions=False) as c:
        yield c


def _open(settings: Settings) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _listed(html: str) -> set[str]:
    """The feature names in the catalog table (one row header each)."""
    return set(re.findall(r'<th scope="row"><a href="/features/[^"/]+">([^<]+)</a></th>', html))


def _alert(html: str) -> str:
    match = ALERT.search(html)
    assert match, "the page shows the error inline"
    return unescape(re.sub(r"<[^>]+>", "", match.group(1)))


def _versions(settings: Settings, view: str) -> list[int]:
    with session_scope(settings.metadata_url) as session:
        return [v.version for v in list_versions(session, view)]


# --- reads on the shared ingested store ---------------------------------------------------


def test_catalog_lists_every_feature_and_filters_narrow_it(client: TestClient) -> None:
    page = client.get("/features")
    assert page.status_code == 200 and 'aria-current="page">Features' in page.text
    assert _listed(page.text) == set(ALL_FEATURES)
    assert "9 of 9 features" in page.text
    link = re.search(r'href="(/features/price_returns[^"/]+ret_1d)"', page.text)
    assert link and "Distribution of ret_1d" in client.get(link.group(1)).text
    for label in ("Search", "Type", "View", "Updated after", "Updated before"):
        assert f">{label}</label>" in page.text

    assert _listed(client.get("/features?type=Int64").text) == {"label_next_day_up"}
    assert _listed(client.get("/features?type=float64").text) == set(ALL_FEATURES) - {
        "label_next_day_up"
    }
    view = client.get("/features?view=risk_momentum").text
    assert _listed(view) == {"vol_20d", "mom_10d", "mom_20d", "rsi_14"}
    assert "4 of 9 features match" in view and 'href="/features">Clear filters' in view
    assert _listed(client.get("/features?q=volume").text) == {"volume_zscore_20d"}
    assert _listed(client.get("/features?q=mom_&view=risk_momentum").text) == {
        "mom_10d",
        "mom_20d",
    }
    assert _listed(client.get("/features?after=2000-01-01").text) == set(ALL_FEATURES)
    old = client.get("/features?before=2000-01-01").text
    assert _listed(old) == set() and "No feature matches these filters" in old
    beyond = client.get("/features?page=2").text
    assert _listed(beyond) == set() and 'rel="prev"' in beyond and "page=1" in beyond


def test_catalog_bad_filters_are_shown_inline(client: TestClient) -> None:
    cases = {
        "/features?type=Complex": (422, "unknown type 'Complex'"),
        "/features?view=no_such_view": (404, "Unknown feature view 'no_such_view'"),
        "/features?after=2025-02-01&before=2024-01-01": (422, "must not be later"),
        "/features?after=yesterday": (422, "must be a date"),
        "/features?page=0": (422, "page must be"),
    }
    for path, (status, message) in cases.items():
        response = client.get(path)
        assert response.status_code == status, path
        assert message in _alert(response.text), path
        assert _listed(response.text) == set(ALL_FEATURES), "the catalog stays below the error"


def test_catalog_without_features_says_how_to_ingest(tmp_path: Path) -> None:
    with _open(make_settings(tmp_path / "empty")) as client:
        page = client.get("/features")
        assert page.status_code == 200
        assert "No features yet" in page.text and "<code>mlops ingest</code>" in page.text
        datasets = client.get("/datasets").text
        assert "No dataset yet" in datasets and "run <code>mlops ingest</code> first" in datasets


def test_feature_detail_shows_statistics_histogram_and_samples(
    client: TestClient, ingested: Settings
) -> None:
    stored = feature_detail(ingested, "price_returns:ret_1d")
    assert stored.statistics is not None
    page = client.get("/features/price_returns:ret_1d")
    assert page.status_code == 200
    html = page.text
    assert "Statistics of v1" in html and "Close-to-close return over 1 day." in html
    assert f'<td class="num">{stored.statistics["count"]}</td>' in html
    for quantile in ("p01", "p50", "p99"):
        assert f'<th scope="row">{quantile}</th>' in html
    assert '<svg class="chart"' in html and "Distribution of ret_1d" in html
    bins = len(stored.statistics["histogram"]["counts"])
    assert html.count('<rect class="bar"') == bins
    sample = stored.samples[0]
    assert f"<td>{sample['ticker']}</td>" in html and f"{sample['value']:.6g}" in html
    assert html.count("<tr><td>") >= len(stored.samples)
    assert 'href="/features/views/price_returns"' in html

    bare = client.get("/features/ret_1d")
    assert bare.status_code == 200 and "Distribution of ret_1d" in bare.text


def test_feature_detail_bad_input_is_inline(client: TestClient) -> None:
    unknown = client.get("/features/no_such_feature")
    assert unknown.status_code == 404
    assert "Unknown feature 'no_such_feature'" in _alert(unknown.text)
    missing = client.get("/features/ret_1d?version=9")
    assert missing.status_code == 404 and "has no version 9" in _alert(missing.text)
    assert "Distribution of ret_1d" in missing.text, "the active version is shown instead"
    bad = client.get("/features/ret_1d?version=latest")
    assert bad.status_code == 422 and "version must be a version number" in _alert(bad.text)
    view = client.get("/features/views/no_such_view")
    assert view.status_code == 404 and "Unknown feature view 'no_such_view'" in _alert(view.text)


# --- changes on a store of the test's own --------------------------------------------------


def _drop_ret_20d(settings: Settings, tmp_path: Path) -> None:
    """Record v2 of price_returns (ret_20d removed) through the ingest flow."""
    repo = tmp_path / "repo"
    shutil.copytree(PROJECT_ROOT / "feature_repo", repo, dirs_exist_ok=True)
    text = (repo / "features.py").read_text()
    line = (
        '        Field(name="ret_20d", dtype=Float64, '
        'description="Close-to-close return over 20 days."),\n'
    )
    assert line in text
    (repo / "features.py").write_text(text.replace(line, "", 1))
    edited = settings.model_copy(update={"feature_repo_dir": repo})
    assert run_ingest_flow(edited, message="drop ret_20d").new_versions == ["price_returns@v2"]


def test_timeline_diff_and_confirmed_rollback(fresh: Settings, tmp_path: Path) -> None:
    _drop_ret_20d(fresh, tmp_path)
    view = "/features/views/price_returns"
    with _open(fresh) as client:
        timeline = client.get(view).text
        assert "active v2" in timeline and 'id="v1"' in timeline and "drop ret_20d" in timeline
        assert "Roll back to v1" not in timeline and "to roll back" in timeline

        diff = client.get(f"{view}/diff?from=1&to=2")
        assert diff.status_code == 200
        assert (
            '<span class="delta removed">removed</span> feature <code>ret_20d</code>' in diff.text
        )
        assert '<th scope="col">v1</th><th scope="col">v2</th>' in diff.text
        assert re.search(
            r'<th scope="row">feature ret_20d</th>\s*<td>Float64: Close-to-close return over 20'
            r' days.</td>\s*<td><span class="empty">absent</span>',
            diff.text,
        )
        for bad, status, message in (
            ("from=1&to=9", 404, "has no version 9"),
            ("from=x&to=2", 422, "from must be a version number"),
        ):
            response = client.get(f"{view}/diff?{bad}")
            assert response.status_code == status and message in _alert(response.text)
        unknown = client.get("/features/views/nope/diff?from=1&to=2")
        assert unknown.status_code == 404 and "Unknown feature view 'nope'" in _alert(unknown.text)

        token = csrf(client, "/datasets")
        body = {"csrf": token, "version": "1", "confirm": "yes"}
        anonymous = client.post(f"{view}/rollback", data=body, follow_redirects=False)
        assert anonymous.status_code == 401 and "Sign in with your API token" in anonymous.text
        sign_in(client, fresh, view)
        token = csrf(client, view)
        assert "Roll back to v1…" in client.get(view).text
        forged = client.post(
            f"{view}/rollback", data={**body, "csrf": "forged"}, follow_redirects=False
        )
        assert forged.status_code == 401 and "The form has expired" in forged.text

        ask = client.post(f"{view}/rollback", data={"csrf": token, "version": "1"})
        assert ask.status_code == 200 and "Roll back price_returns to v1?" in ask.text
        assert 'name="confirm" value="yes" required' in ask.text
        assert 'for="rb-message">Reason</label>' in ask.text
        for sent, status, message in (
            ({"version": "7", "confirm": "yes"}, 404, "has no version 7"),
            ({"version": "2", "confirm": "yes"}, 422, "already the active one"),
            ({"version": "one", "confirm": "yes"}, 422, "version must be a version number"),
        ):
            refused = client.post(f"{view}/rollback", data={"csrf": token, **sent})
            assert refused.status_code == status and message in _alert(refused.text)
        assert _versions(fresh, "price_returns") == [1, 2], "nothing changed yet"

        done = client.post(
            f"{view}/rollback",
            data={**body, "csrf": token, "message": "bring ret_20d back"},
            follow_redirects=False,
        )
        assert done.status_code == 303 and done.headers["location"] == f"{view}?rolled=3"
        after = client.get(done.headers["location"]).text
        assert "Rolled back: v3 is the active version" in after and "active v3" in after
        assert 'id="v3"' in after and "bring ret_20d back" in after and "rollback" in after
        assert _versions(fresh, "price_returns") == [1, 2, 3]
        assert "Statistics of v3" in client.get("/features/price_returns:ret_20d").text


def test_dataset_created_from_ticked_features_listed_and_downloadable(fresh: Settings) -> None:
    with _open(fresh) as client:
        form = client.get("/datasets").text
        assert 'value="price_returns:ret_1d"' in form and 'name="ticker"' in form
        for label in ('for="ds-name">Name', 'for="ds-start">Start', 'for="ds-end">End'):
            assert label in form
        tickers = re.findall(r'name="ticker" value="([^"]+)"', form)
        assert len(tickers) == 5
        token = csrf(client, "/datasets")
        good = {
            "csrf": token,
            "name": "console-ds",
            "feature": ["price_returns:ret_1d", "risk_momentum:rsi_14"],
            "ticker": tickers[:2],
            "start": "2024-03-01",
            "end": "2024-06-28",
            "include_label": "1",
        }
        anonymous = client.post("/datasets", data=good, follow_redirects=False)
        assert anonymous.status_code == 401
        sign_in(client, fresh, "/datasets")
        token = csrf(client, "/datasets")
        good["csrf"] = token

        for change, status, message in (
            ({"feature": []}, 422, "Tick at least one feature"),
            ({"feature": ["price_returns:nope"]}, 404, "Unknown feature 'price_returns:nope'"),
            ({"ticker": ["ZZZZ"]}, 404, "Unknown tickers: ZZZZ"),
            ({"start": "2024-06-01", "end": "2024-03-01"}, 422, "start must not be after end"),
            ({"start": "March"}, 422, "start must be a date"),
            ({"name": "../escape"}, 400, "Invalid dataset name"),
        ):
            refused = client.post("/datasets", data={**good, **change})
            assert refused.status_code == status and message in _alert(refused.text), change
            assert "feature" in change or "checked> rsi_14" in refused.text, "form kept"
            assert f'value="{good["name"] if "name" not in change else change["name"]}"' in (
                refused.text
            )
        assert list_datasets(fresh) == [], "bad requests create nothing"

        created = client.post("/datasets", data=good, follow_redirects=False)
        assert created.status_code == 303
        assert created.headers["location"] == "/datasets/console-ds?created=1"
        detail = client.get(created.headers["location"]).text
        info = list_datasets(fresh)[0]
        assert info.tickers == sorted(tickers[:2])
        assert f"Dataset created: {info.rows} rows." in detail
        assert '<th scope="col">ret_1d</th>' in detail and '<th scope="col">rsi_14</th>' in detail

        listing = client.get("/datasets").text
        assert 'href="/datasets/console-ds">console-ds</a>' in listing
        links = re.findall(r'href="(/api/v1/datasets/console-ds/download\?format=\w+)"', listing)
        assert len(links) == 2
        csv = client.get(unescape(links[1]))
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        header, *rows = csv.text.strip().splitlines()
        assert "ret_1d" in header and "rsi_14" in header and "label_next_day_up" in header
        assert len(rows) == info.rows
        parquet = client.get(unescape(links[0]))
        assert parquet.status_code == 200 and parquet.content[:4] == b"PAR1"

        again = client.post("/datasets", data=good)
        assert again.status_code == 409 and "already exists" in _alert(again.text)
        assert client.get("/datasets/no-such").status_code == 404
