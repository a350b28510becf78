"""Which Ray head the platform uses and how `mlops up` starts one; how the ingest's sorted
bars are cut into Ray tasks. (The tasks themselves, on a real head:
tests/integration/test_ray_engines.py.)"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.support.ports import free_port
from tests.support.settings import make_settings

from mlops import ray_cluster
from mlops.errors import StoreUnavailableError
from mlops.features.compute_ray import ticker_parts
from mlops.runs import current_owner, owner_of
from mlops.services import _commands, child_environment, own_servers


@pytest.fixture(autouse=True)
def _no_ray_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Ray token or head of the test session; what a test sets is undone after it."""
    for name in (*ray_cluster.AUTH_ENVIRONMENT, "MLOPS_RAY_ADDRESS"):
        monkeypatch.setenv(name, "")  # recorded, so that it is restored (or removed)
        monkeypatch.delenv(name)


def test_mlops_up_starts_a_ray_head_only_when_an_engine_needs_one_and_none_is_given(
    tmp_path: Path,
) -> None:
    local = make_settings(tmp_path)
    assert "ray" not in own_servers(local)
    for engine in ({"compute_engine": "ray"}, {"dataset_engine": "ray"}):
        assert "ray" in own_servers(local.model_copy(update=engine))
    given = local.model_copy(update={"compute_engine": "ray", "ray_address": "10.0.0.5:6379"})
    assert "ray" not in own_servers(given)
    assert "MLOPS_RAY_ADDRESS" not in child_environment(given)  # the given one is used as is


def test_the_head_of_mlops_up_is_on_its_own_port_with_a_private_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, compute_engine="ray", ray_port=7001, ray_client_port=7002)
    command, health = _commands(settings)["ray"]
    assert command[1:4] == ["start", "--head", "--block"]
    assert {"--port=7001", "--ray-client-server-port=7002"} <= set(command)
    assert health == "tcp://127.0.0.1:7001"

    env = child_environment(settings)  # of the head, the API, the worker and the flows
    assert env["MLOPS_RAY_ADDRESS"] == "127.0.0.1:7001"
    assert env["RAY_AUTH_MODE"] == "token"
    token = Path(env["RAY_AUTH_TOKEN_PATH"])
    assert token.is_relative_to(settings.home)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text()) == 64
    assert child_environment(settings)["RAY_AUTH_TOKEN_PATH"] == str(token)
    assert token.read_text() == Path(env["RAY_AUTH_TOKEN_PATH"]).read_text()  # made once


def test_a_command_outside_mlops_up_uses_its_head_while_it_runs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, compute_engine="ray")
    assert ray_cluster.head_address(settings) is None  # no `mlops up`: a Ray of its own
    services = settings.run_dir / "services.json"
    services.write_text(json.dumps({"ray": "127.0.0.1:6390", "supervisor": current_owner()}))

    assert ray_cluster.head_address(settings) == "127.0.0.1:6390"
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(ray_cluster.head_token_path(settings))

    gone = owner_of(os.getpid()).rsplit(":", 1)[0] + ":0"  # this pid, another start time
    services.write_text(json.dumps({"ray": "127.0.0.1:6390", "supervisor": gone}))
    assert ray_cluster.head_address(settings) is None
    given = settings.model_copy(update={"ray_address": "ray://10.0.0.5:10001"})
    assert ray_cluster.head_address(given) == "ray://10.0.0.5:10001"


def test_an_unreachable_head_is_refused_at_once_with_what_to_do() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(
        StoreUnavailableError, match=f"Ray cluster at {address} is unavailable"
    ) as e:
        ray_cluster.ensure_reachable(address)
    assert e.value.exit_code == 12
    assert "MLOPS_COMPUTE_ENGINE=local" in e.value.message
    assert "MLOPS_COMPUTE_ENGINE=local" in e.value.message
    ray_cluster.ensure_reachable(None)  # a Ray of this process: nothing to reach


def test_a_batch_below_the_threshold_is_computed_here_even_with_the_ray_engine(
    tmp_path: Path,
) -> None:
    from datetime import date

    from mlops.features.compute import compute_frames
    from mlops.features.demo_data import generate_ohlcv
    from mlops.features.offline_changes import as_bars, computed_frames, sorted_bars

    bars = sorted_bars(as_bars(generate_ohlcv(3, date(2024, 1, 2), date(2024, 3, 1), seed=3)))
    nowhere = f"127.0.0.1:{free_port()}"  # any attempt to reach a cluster fails (exit 12)
    settings = make_settings(tmp_path).model_copy(
        update={"compute_engine": "ray", "ray_address": nowhere}
    )
    small = settings.model_copy(update={"ray_compute_min_bars": len(bars) + 1})
    features, labels, where = computed_frames(small, bars, None)
    assert where is None
    expected = compute_frames(bars, None)
    pd.testing.assert_frame_equal(features, expected[0])
    pd.testing.assert_frame_equal(labels, expected[1])
    at_threshold = settings.model_copy(update={"ray_compute_min_bars": len(bars)})
    with pytest.raises(StoreUnavailableError, match=f"Ray cluster at {nowhere}"):
        computed_frames(at_threshold, bars, None)


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 50])
def test_ticker_parts_hold_whole_tickers_and_cover_every_row_once(parts: int) -> None:
    sizes = [30, 1, 400, 22, 22, 5, 90]  # rows per ticker, uneven
    tickers = np.repeat(np.array([f"T{i}" for i in range(len(sizes))], dtype=object), sizes)

    cut = ticker_parts(tickers, parts)

    assert 1 <= len(cut) <= min(parts, len(sizes))
    assert np.concatenate([tickers[rows] for rows in cut]).tolist() == tickers.tolist()
    owners = [set(tickers[rows]) for rows in cut]
    assert all(owners) and all(a.isdisjoint(b) for i, a in enumerate(owners) for b in owners[:i])
    if parts == 2:  # about equal: the cut is at the ticker start nearest after half the rows
        assert [len(tickers[rows]) for rows in cut] == [431, 139]


def test_ticker_parts_of_no_rows_and_of_one_ticker() -> None:
    assert ticker_parts(np.array([], dtype=object), 4) == []
    assert ticker_parts(np.array(["A"] * 9, dtype=object), 4) == [slice(0, 9)]


def test_the_kuberay_manifest_runs_the_ray_the_platform_pins() -> None:
    import tomllib

    import yaml

    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pinned = next(r for r in extras["optional-dependencies"]["cluster"] if r.startswith("ray["))
    manifests = list(yaml.safe_load_all((root / "deploy/kubernetes/raycluster.yaml").read_text()))
    (cluster,) = [m for m in manifests if m["kind"] == "RayCluster"]
    assert pinned.endswith(f"=={cluster['spec']['rayVersion']}")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in head["env"]} == {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
    mlflow = list(yaml.safe_load_all((root / "deploy/kubernetes/mlflow.yaml").read_text()))
    (server,) = [m for m in mlflow if m["kind"] == "Deployment"]
    args = server["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any(a.startswith("--artifacts-destination=s3://") for a in args)


def test_a_ray_engine_without_ray_installed_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from mlops.errors import ConfigError

    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else found(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'mlops\[cluster\]'"):
        ray_cluster.ensure_installed()
