"""Settings: profiles, environment precedence, token handling."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mlops.errors import ConfigError
from mlops.features.store import feature_store_config
from mlops.settings import Settings


def test_local_profile_keeps_all_state_under_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.profile == "local"
    assert settings.metadata_url == f"sqlite:///{tmp_path / 'mlops.db'}"
    config = feature_store_config(settings)
    assert config["offline_store"] == {"type": "mlops.features.offline_store.SnapshotOfflineStore"}
    assert config["online_store"]["type"] == "sqlite"
    assert config["online_store"]["path"].startswith(str(tmp_path))
    assert config["registry"]["path"].startswith(str(tmp_path))


def test_environment_overrides_profile_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("MLOPS_API_PORT", "9123")
    settings = Settings()
    assert settings.home == (tmp_path / "elsewhere").resolve() and settings.api_port == 9123
    assert Settings(api_port=9999).api_port == 9999


def test_production_profile_requires_its_uris(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_PROFILE", "production")
    with pytest.raises(ConfigError, match="MLOPS_METADATA_DB_URL"):
        Settings()


def test_production_profile_uses_sql_registry_and_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_PROFILE", "production")
    settings = Settings(
        home=tmp_path,
        metadata_db_url="postgresql+psycopg://u@h/db",
        feast_registry_url="postgresql+psycopg://u@h/reg",
        redis_url="127.0.0.1:6379",
        mlflow_tracking_uri="postgresql+psycopg://u@h/mlflow",
    )
    assert settings.reads_require_auth is True  # from config/profiles/production.yaml
    config = feature_store_config(settings)
    assert config["registry"]["registry_type"] == "sql"
    assert config["online_store"]["type"] == "redis"
    assert config["online_store"]["connection_string"].startswith("127.0.0.1:6379,")
    with pytest.raises(ConfigError, match="MLOPS_API_TOKEN"):
        _ = settings.token


def test_local_token_is_generated_once_and_private(tmp_path: Path) -> None:
    first = Settings(home=tmp_path).token
    assert len(first) >= 32
    assert Settings(home=tmp_path).token == first
    mode = stat.S_IMODE((tmp_path / "api_token").stat().st_mode)
    assert mode == 0o600
    assert Settings(home=tmp_path, api_token="given").token == "given"


def test_prefect_environment_points_at_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, prefect_port=4321)
    env = settings.prefect_environment(use_server=True)
    assert env["PREFECT_HOME"] == str(tmp_path / "prefect")
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    assert "PREFECT_API_URL" not in settings.prefect_environment(use_server=False)


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "api_token").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        _ = Settings(home=tmp_path).token


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://app:s3-cret@db.internal:5432/mlops",
            "postgresql+psycopg://app:***@db.internal:5432/mlops",
        ),
        ("redis.internal:6379,password=s3-cret,db=1", "redis.internal:6379,password=***,db=1"),
        ("https://s3-cret@github.com/team/prompts.git", "https://***@github.com/team/prompts.git"),
        ("sqlite:////var/mlops/mlops.db", "sqlite:////var/mlops/mlops.db"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str, tmp_path: Path) -> None:
    from mlops.settings import without_password

    assert without_password(url) == shown
    settings = Settings(home=tmp_path, metadata_db_url=url, prompts_remote=url)
    dumped = settings.model_dump_json()
    assert "s3-cret" not in dumped
    assert settings.metadata_db_url == url  # the process itself keeps the real value


def test_state_folder_places_are_shown_relative_to_it(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.shown_uri((tmp_path / "mlartifacts" / "m").as_uri()) == "mlartifacts/m"
    assert settings.shown_uri("s3://bucket/mlartifacts") == "s3://bucket/mlartifacts"


def test_mlflow_fails_fast_when_its_server_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_MLFLOW_HTTP_TIMEOUT_S", "3")
    env = Settings(home=tmp_path).mlflow_environment()
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        Settings(home=tmp_path, mlflow_http_max_retries=-1)


def test_postgres_and_redis_stores_connect_with_a_timeout_and_no_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_PROFILE", "production")
    url = "postgresql+psycopg://u@127.0.0.1:5432/registry"
    settings = Settings(
        home=tmp_path,
        metadata_db_url=url,
        feast_registry_url=url,
        redis_url="127.0.0.1:6379",
        mlflow_tracking_uri=url,
        api_token="t",
    )
    config = feature_store_config(settings)
    assert config["registry"]["sqlalchemy_config_kwargs"]["connect_args"] == {"connect_timeout": 5}
    assert config["online_store"]["connection_string"] == (
        "127.0.0.1:6379,socket_connect_timeout=5,retry=null"
    )
    given = settings.model_copy(update={"redis_url": "r:6379,retry=null,password=p"})
    assert feature_store_config(given)["online_store"]["connection_string"] == (
        "r:6379,retry=null,password=p,socket_connect_timeout=5"
    )
