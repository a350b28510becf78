"""The `mlops` CLI over a real ingested store: output, JSON, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tests.support.ingest import read_offline
from typer.testing import CliRunner

from mlops.cli import app
from mlops.errors import InvalidInputError, NotFoundError, UnsafePathError
from mlops.settings import Settings

runner = CliRunner()


@pytest.fixture()
def cli_env(ingested: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MLOPS_HOME", str(ingested.home))
    for key in ("demo_tickers", "demo_start", "demo_end"):
        monkeypatch.setenv(f"MLOPS_{key.upper()}", str(getattr(ingested, key)))
    return ingested


def test_help_lists_the_command_groups() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlops", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("ingest", "demo", "features", "datasets", "api", "up", "health"):
        assert command in result.stdout
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, mlops.cli; print('feast' in sys.modules, "
            "'prefect' in sys.modules, 'mlflow' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "False False False"


def test_features_list_json_and_table(cli_env: Settings) -> None:
    result = runner.invoke(app, ["features", "list", "--json", "--type", "Float64"])
    assert result.exit_code == 0, result.output
    page = json.loads(result.stdout)
    assert page["total"] == 8 and all(f["dtype"] == "Float64" for f in page["items"])
    found = json.loads(runner.invoke(app, ["features", "list", "-s", "volume", "--json"]).stdout)
    assert [f["name"] for f in found["items"]] == ["volume_zscore_20d"]
    table = runner.invoke(app, ["features", "list", "--search", "volume"])
    assert "Features (1)" in table.output and "volume_signals" in table.output


def test_features_show_history_and_diff(cli_env: Settings) -> None:
    shown = json.loads(runner.invoke(app, ["features", "show", "ret_5d", "--json"]).stdout)
    assert shown["statistics"]["count"] > 0 and shown["feature_view"] == "price_returns"
    table = runner.invoke(app, ["features", "show", "ret_5d"])
    assert "Statistics (v1)" in table.output and "quantiles" in table.output
    history = json.loads(runner.invoke(app, ["features", "history", "ret_5d", "--json"]).stdout)
    assert [v["version"] for v in history] == [1]
    diff = runner.invoke(app, ["features", "diff", "price_returns", "1", "1"])
    assert "No differences." in diff.output


def test_errors_have_exit_codes_and_messages(cli_env: Settings) -> None:
    missing = runner.invoke(app, ["features", "show", "nope"])
    assert missing.exit_code == NotFoundError.exit_code and "Unknown feature" in missing.output
    bad_type = runner.invoke(app, ["features", "list", "--type", "decimal"])
    assert bad_type.exit_code == InvalidInputError.exit_code and "unknown type" in bad_type.output
    escape = runner.invoke(app, ["datasets", "create", "../x"])
    assert escape.exit_code == UnsafePathError.exit_code
    rollback = runner.invoke(app, ["features", "rollback", "price_returns", "1", "--yes"])
    assert rollback.exit_code == 5 and "nothing to roll back" in rollback.output


def test_datasets_create_list_download(cli_env: Settings, tmp_path: Path) -> None:
    created = runner.invoke(
        app,
        [
            "datasets",
            "create",
            "cli-ds",
            "-f",
            "ret_1d",
            "-t",
            "BUCI",
            "--start",
            "2024-02-01",
            "--end",
            "2024-02-29",
            "--json",
        ],
    )
    assert created.exit_code == 0, created.output
    info = json.loads(created.stdout)
    assert info["tickers"] == ["BUCI"] and info["rows"] > 15
    listed = json.loads(runner.invoke(app, ["datasets", "list", "--json"]).stdout)
    assert "cli-ds" in [d["name"] for d in listed]
    out = runner.invoke(
        app, ["datasets", "download", "cli-ds", "-o", str(tmp_path), "--format", "csv"]
    )
    assert out.exit_code == 0, out.output
    frame = pd.read_csv(tmp_path / "cli-ds.csv")
    assert len(frame) == info["rows"] and "label_next_day_up" in frame.columns


def test_ingest_of_a_missing_file_fails_cleanly(cli_env: Settings) -> None:
    result = runner.invoke(app, ["ingest", "/nonexistent/bars.csv"])
    assert result.exit_code == NotFoundError.exit_code
    assert "bars.csv" in result.output


def test_train_registers_a_model_version(cli_env: Settings) -> None:
    result = runner.invoke(app, ["train", "logistic_regression", "-p", "C=0.1", "--json"])
    assert result.exit_code == 0, result.output
    # CliRunner also captures MLflow's stderr notices after the JSON; in a terminal,
    # stdout holds the JSON alone.
    trained, _ = json.JSONDecoder().raw_decode(result.stdout)
    assert trained["model_uri"].startswith("models:/direction-model/")
    assert set(trained["metrics"]) >= {"accuracy", "roc_auc", "log_loss", "brier"}


def test_train_several_models_registers_each_in_the_order_given(cli_env: Settings) -> None:
    result = runner.invoke(app, ["train", "random_forest", "logistic_regression", "--json"])
    assert result.exit_code == 0, result.output
    trained, _ = json.JSONDecoder().raw_decode(result.stdout)
    assert [t["kind"] for t in trained] == ["random_forest", "logistic_regression"]
    first, second = (int(t["model_version"]) for t in trained)
    assert second == first + 1
    assert trained[0]["dataset"] == trained[1]["dataset"]  # built once, shared


def test_train_bad_input_exit_codes(cli_env: Settings) -> None:
    assert runner.invoke(app, ["train", "no_such_model"]).exit_code == NotFoundError.exit_code
    several = runner.invoke(app, ["train", "random_forest", "no_such_model"])
    assert several.exit_code == NotFoundError.exit_code, several.output
    one_only = runner.invoke(app, ["train", "random_forest", "logistic_regression", "-p", "C=1"])
    assert one_only.exit_code == InvalidInputError.exit_code
    assert "--param applies to one model configuration" in one_only.output
    bad = runner.invoke(app, ["train", "logistic_regression", "-p", "C"])
    assert bad.exit_code == InvalidInputError.exit_code and "name=value" in bad.output
    yaml_error = runner.invoke(app, ["train", "logistic_regression", "-p", "C=["])
    assert yaml_error.exit_code == InvalidInputError.exit_code
    assert "not valid YAML" in yaml_error.output


def test_download_into_a_missing_folder_is_a_clear_error(cli_env: Settings, tmp_path: Path) -> None:
    runner.invoke(app, ["datasets", "create", "dl-ds", "-t", "HEX", "--start", "2024-03-01"])
    result = runner.invoke(
        app, ["datasets", "download", "dl-ds", "-o", str(tmp_path / "no" / "x.parquet")]
    )
    assert result.exit_code == NotFoundError.exit_code and "does not exist" in result.output


def test_health_reports_each_part_and_fails_when_servers_are_down(
    cli_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_PREFECT_PORT", "1")
    monkeypatch.setenv("MLOPS_MLFLOW_PORT", "1")
    result = runner.invoke(app, ["health", "--json"])
    assert result.exit_code == 8
    components = json.loads(result.stdout)["components"]
    assert {k: v["status"] for k, v in components.items()} == {
        "metadata_db": "ok",
        "mlflow_tracking": "ok",
        "feast_registry": "ok",
        "offline_store": "ok",
        "online_store": "ok",
        "prefect": "down",
        "mlflow": "down",
    }
    table = runner.invoke(app, ["health"])
    assert "down prefect" in table.output and "ok online_store" in table.output


def _bars_csv(path: Path, tickers_and_dates: list[tuple[str, str]]) -> Path:
    rows = [f"{ticker},{day},100,101,99,100.5,1000" for ticker, day in tickers_and_dates]
    path.write_text("ticker,date,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return path


def _store_files(settings: Settings) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes()
        for d in (settings.data_dir, settings.feast_dir)
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def test_ingest_refuses_ambiguous_dates_and_bad_formats(cli_env: Settings, tmp_path: Path) -> None:
    from mlops.errors import DataValidationError

    path = _bars_csv(tmp_path / "dm.csv", [("BUCI", "01/02/2024"), ("BUCI", "02/03/2024")])
    before = _store_files(cli_env)

    ambiguous = runner.invoke(app, ["ingest", str(path)])

    assert ambiguous.exit_code == DataValidationError.exit_code
    text = " ".join(ambiguous.output.split())
    assert "dm.csv: column 'date': the dates are ambiguous" in text
    assert "'%d/%m/%Y'" in text and "'%m/%d/%Y'" in text and "--date-format" in text
    assert "line 2 '01/02/2024'" in text and "line 3 '02/03/2024'" in text
    assert _store_files(cli_env) == before
    typo = runner.invoke(app, ["ingest", str(path), "--date-format", "dd/mm/yyyy"])
    assert typo.exit_code == InvalidInputError.exit_code
    assert "no strftime directive" in typo.output


@pytest.mark.parametrize(
    "args",
    [
        ["datasets", "create", "x\n"],
        ["datasets", "create", "x "],
        ["datasets", "create", "ok", "-t", "BUCI\n"],
        ["datasets", "create", "ok", "-t", "BUCI\t"],
        ["datasets", "download", "x\n", "-o", "/nonexistent"],
    ],
)
def test_names_with_whitespace_or_control_characters_exit_2(
    cli_env: Settings, args: list[str]
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == InvalidInputError.exit_code, result.output
    assert "invalid" in result.output.lower()


def _yahoo_folder(folder: Path, tickers: list[str]) -> Path:
    folder.mkdir()
    for ticker in tickers:
        rows = [f"2024-01-0{day},100,101,99,100.5,50.2,1000" for day in range(2, 6)]
        (folder / f"{ticker}.csv").write_text(
            "Date,Open,High,Low,Close,Adj Close,Volume\n" + "\n".join(rows) + "\n"
        )
    return folder


def test_ingest_help_explains_the_vendor_options() -> None:
    result = runner.invoke(app, ["ingest", "--help"], terminal_width=200)
    text = " ".join(result.output.split())
    for option in ("--source", "--map", "--ticker", "--ticker-from", "--ticker-pattern"):
        assert option in text
    assert "mlops ingest data/yahoo/ --source yahoo" in text
    assert '--map "Adj Close=close"' in text


@pytest.mark.parametrize(
    ("args", "exit_code", "expected"),
    [
        pytest.param(
            ["{folder}", "--ticker-from", "filename"],
            3,
            "AAPL.csv lacks the columns date, open, high, low, close, volume: it has Date, "
            "Open, High, Low, Close, Adj Close, Volume; add --map Date=date",
            id="missing-column",
        ),
        pytest.param(
            ["{folder}", "-s", "yahoo", "--map", "Adjusted=close"],
            2,
            "The column map names 'Adjusted', which AAPL.csv does not have (it has Date, Open",
            id="map-names-absent-column",
        ),
        pytest.param(["{folder}/Z*.csv", "-s", "yahoo"], 4, "Z*.csv matches no file", id="glob"),
        pytest.param(
            ["{folder}", "{other}", "-s", "yahoo"],
            3,
            "must share one header: AAPL.csv, MSFT.csv have Date, Open, High, Low, Close, Adj "
            "Close, Volume; IBM.csv has Date, Open, High, Low, Close, Volume",
            id="different-headers",
        ),
        pytest.param(
            ["{folder}", "-s", "bloomberg"],
            4,
            "Unknown source 'bloomberg' (known in sources.yaml: yahoo)",
            id="unknown-source",
        ),
        pytest.param(
            ["{folder}", "--ticker", "AAPL"], 2, "--ticker is the ticker of one file", id="ticker"
        ),
    ],
)
def test_ingest_of_vendor_files_refuses_bad_batches_before_writing(
    cli_env: Settings, tmp_path: Path, args: list[str], exit_code: int, expected: str
) -> None:
    folder = _yahoo_folder(tmp_path / "yahoo", ["AAPL", "MSFT"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "IBM.csv").write_text("Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1,10\n")
    before = _store_files(cli_env)

    result = runner.invoke(
        app, ["ingest", *(a.format(folder=folder, other=other) for a in args)], terminal_width=400
    )

    assert result.exit_code == exit_code, result.output
    assert expected in " ".join(result.output.split())
    assert _store_files(cli_env) == before


def test_ingest_json_is_all_of_stdout(
    fresh: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`mlops ingest --json | jq`: the progress bar and notices go to stderr then."""
    monkeypatch.setenv("MLOPS_HOME", str(fresh.home))
    folder = _yahoo_folder(tmp_path / "yahoo", ["ZAPL", "ZMSF"])

    result = runner.invoke(app, ["ingest", str(folder), "--source", "yahoo", "--json", "--local"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == 8
    assert "ingest: done" in result.stderr and "Prefect: " in result.stderr
    again = runner.invoke(app, ["features", "list", "--json"])  # stdout is stdout again
    assert json.loads(again.stdout)["items"]


def test_ingest_of_a_yahoo_folder(
    fresh: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(fresh.home))
    for key in ("demo_tickers", "demo_start", "demo_end"):
        monkeypatch.setenv(f"MLOPS_{key.upper()}", str(getattr(fresh, key)))
    folder = _yahoo_folder(tmp_path / "yahoo", ["ZAPL", "ZMSF"])

    result = runner.invoke(app, ["ingest", str(folder), "--source", "yahoo"], terminal_width=200)

    assert result.exit_code == 0, result.output
    assert "Ingested 8 rows from 2 files." in result.output
    assert "Columns not read: Adj Close." in result.output
    bars = read_offline(fresh, "bars.parquet")
    assert bars[bars["ticker"].isin(["ZAPL", "ZMSF"])].groupby("ticker").size().to_dict() == {
        "ZAPL": 4,
        "ZMSF": 4,
    }
