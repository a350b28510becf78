"""The one settings object: every path, URI, port and secret of the platform.

Values come, in order of precedence, from keyword arguments, `MLOPS_*` environment
variables, the active profile's YAML file in `config/profiles/` and the defaults below.
No other module reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_serializer, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from mlops.errors import ConfigError

Profile = Literal["local", "production", "cluster"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The source checkout (the package is installed in editable mode from it)."""

_PRODUCTION_REQUIRED = ("metadata_db_url", "feast_registry_url", "redis_url", "mlflow_tracking_uri")
_CLUSTER_REQUIRED = (*_PRODUCTION_REQUIRED, "mlflow_database_url")
SERVER_PROFILES = ("production", "cluster")
"""Profiles of a shared platform: tokens required, PostgreSQL and Redis, no secrets shown."""


class _ProfileChoice(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")
    profile: Profile = "local"
    config_dir: Path = PROJECT_ROOT / "config"


class Settings(BaseSettings):
    """Configuration of one platform instance."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")

    profile: Profile = "local"
    home: Path = Field(default=Path(".mlops"), description="State folder (MLOPS_HOME).")
    config_dir: Path = PROJECT_ROOT / "config"
    feature_repo_dir: Path = PROJECT_ROOT / "feature_repo"
    flows_dir: Path = PROJECT_ROOT / "flows"
    prompts_source_dir: Path = PROJECT_ROOT / "prompts"
    prompts_repo_dir: Path | None = Field(
        default=None, description="Git repository of prompt templates; None: HOME/prompts."
    )
    prompts_remote: str | None = Field(
        default=None, description="Git remote URL the prompt repository pushes publishes to."
    )
    prompts_mlflow_registry: bool = Field(
        default=True, description="Also register published prompt versions in MLflow."
    )
    prompts_render_timeout_s: float = Field(default=2.0, gt=0)
    editor: str = Field(
        default="vi",
        validation_alias=AliasChoices("editor", "EDITOR"),
        description="Editor of `mlops prompts edit` (the EDITOR environment variable).",
    )

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="API server processes (uvicorn --workers). More than one only where "
        "flows run on a work pool (cluster profile): in the other profiles a deployment runs "
        "in a thread of the process that accepted it.",
    )
    prefect_port: int = 4200
    mlflow_port: int = 5000

    api_token: SecretStr | None = None
    reads_require_auth: bool = False
    author: str = "mlops"
    trusted_proxy_header: str | None = Field(
        default=None,
        description="A header (e.g. X-Forwarded-User) in which a reverse proxy in front of "
        "the platform (an SSO proxy) names the signed-in user; honoured only on requests "
        "from `trusted_proxies` and without a bearer token. The user must exist.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of the proxies whose identity header is "
        "trusted, as JSON in the environment: MLOPS_TRUSTED_PROXIES='[\"10.0.0.5\"]'.",
    )

    metadata_db_url: str | None = None
    feast_project: str = "quant"
    feast_registry_url: str | None = None
    redis_url: str | None = None
    mlflow_tracking_uri: str | None = None
    prefect_api_url: str | None = None
    prefect_database_url: str | None = Field(
        default=None,
        description="Database of the Prefect server `mlops up` starts (cluster profile: "
        "PostgreSQL, postgresql+asyncpg://...); None: Prefect's SQLite under the home folder.",
    )
    prefect_redis_db: int = Field(
        default=0,
        ge=0,
        description="Redis database of the Prefect server's messaging (cluster profile); "
        "the server's events, caches and leases are on the `redis_url` host.",
    )
    work_pool: str = Field(
        default="mlops",
        min_length=1,
        description="Prefect work pool whose workers run the flows (cluster profile).",
    )
    dataset_engine: Literal["duckdb", "ray"] = Field(
        default="duckdb",
        description="Feast offline store of point-in-time datasets: `duckdb`, the platform's "
        "ASOF JOINs on this host; `ray`, Feast's Ray offline store and Ray compute engine "
        "(on `ray_address`), for offline data larger than one host.",
    )
    compute_engine: Literal["local", "ray"] = Field(
        default="local",
        description="Where the fanned-out work runs: `local`, in the process that runs the "
        "flow; `ray`, on the Ray cluster at `ray_address`: the ingest's features as Ray "
        "tasks (one per group of whole tickers, the same values bit for bit) and an "
        "evaluation's suite and explain tasks through Prefect's RayTaskRunner.",
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster of the `ray` engines (host:port of its head, or "
        "ray://host:10001). None: the head `mlops up` started for this state folder when "
        "an engine is `ray`, else a Ray instance inside the process that needs it.",
    )
    ray_compute_min_bars: int = Field(
        default=200_000,
        ge=0,
        description="With compute_engine `ray`, an ingest computes its features on the "
        "cluster from this many bars on, and smaller batches (a day's) in its own process: "
        "connecting and shipping cost more than a day's computation (0.06 s for 1,150 "
        "tickers). 0: always on the cluster.",
    )
    ray_port: int = Field(
        default=6390,
        ge=1,
        le=65535,
        description="Port of the Ray head `mlops up` starts when an engine is `ray` and no "
        "`ray_address` is given (Redis holds Ray's usual 6379).",
    )
    ray_client_port: int = Field(
        default=10001,
        ge=1,
        le=65535,
        description="Ray Client port of the head `mlops up` starts (ray://127.0.0.1:PORT).",
    )
    mlflow_database_url: str | None = Field(
        default=None,
        description="MLflow's database, when the tracking URI is its server (cluster "
        "profile): the server's backend store, and where the platform reads the experiment "
        "and registry summaries the REST API cannot answer in one call. None: the tracking "
        "URI itself (a database).",
    )
    mlflow_artifacts_destination: str | None = Field(
        default=None,
        description="Where the MLflow server `mlops up` starts keeps artifacts (a folder or "
        "s3://bucket/prefix); clients reach them through the server. None: HOME/mlartifacts.",
    )
    mlflow_http_timeout_s: int = Field(
        default=5, gt=0, description="Timeout of each request to an MLflow tracking server."
    )
    mlflow_http_max_retries: int = Field(
        default=1,
        ge=0,
        description="Retries of a failed MLflow server request (MLflow's default, 7 with "
        "backoff, holds a request ~4 min when the server is down).",
    )
    health_probe_timeout_s: float = Field(
        default=8.0,
        gt=0,
        description="How long /healthz waits for each store's answer: longer than the 5 s "
        "connect and lock timeouts (their errors say more) and than a cold Feast import.",
    )
    alias_recheck_s: float = Field(
        default=10.0,
        gt=0,
        description="Online predictions ask MLflow again for an alias's version after this "
        "long: the most an alias moved outside the platform (MLflow UI) goes unseen.",
    )
    reap_every_s: float = Field(
        default=15.0,
        gt=0,
        description="How often the API closes the records of runs whose process is gone "
        "(deployments, evaluations, ingests); it also does at start-up.",
    )
    mlflow_allow_pickle: bool = Field(
        default=True,
        description="Let MLflow load the sklearn models the platform registered (skops/pickle).",
    )

    api_max_body_bytes: int = Field(
        default=1024**2, gt=0, description="Largest JSON body of an API call (413 above)."
    )
    console_max_form_bytes: int = Field(
        default=2 * 1024**2, gt=0, description="Largest form a console page may post."
    )
    ingest_max_bytes: int = 2 * 1024**3
    demo_tickers: int = 20
    demo_start: date = date(2020, 1, 2)
    demo_end: date | None = Field(default=None, description="None: the last business day.")
    demo_seed: int = 7

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        choice = _ProfileChoice()
        profile_file = choice.config_dir / "profiles" / f"{choice.profile}.yaml"
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=profile_file),
        )

    @field_serializer(
        "metadata_db_url",
        "feast_registry_url",
        "redis_url",
        "mlflow_tracking_uri",
        "prefect_api_url",
        "prefect_database_url",
        "mlflow_database_url",
        "prompts_remote",
        when_used="json",
    )
    def _hide_passwords(self, url: str | None) -> str | None:
        """Settings shown as JSON (Prefect's flow-run parameters, logs) carry no password;
        the API token is a SecretStr and shows as stars."""
        return None if url is None else without_password(url)

    @model_validator(mode="after")
    def _check_profile(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        required = {"production": _PRODUCTION_REQUIRED, "cluster": _CLUSTER_REQUIRED}
        missing = [name for name in required.get(self.profile, ()) if not getattr(self, name)]
        if missing:
            names = ", ".join(f"MLOPS_{name.upper()}" for name in missing)
            raise ConfigError(f"The {self.profile} profile needs {names} to be set.")
        if self.api_workers > 1 and not self.uses_work_pool:
            raise ConfigError(
                f"MLOPS_API_WORKERS={self.api_workers} needs the cluster profile: in the "
                f"{self.profile} profile runs live in the API process that started them."
            )
        for network in self.trusted_proxies:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ConfigError(
                    f"MLOPS_TRUSTED_PROXIES: {network!r} is not an address or network ({exc})."
                ) from exc
        if self.profile == "cluster" and not self.tracking_uri.startswith("http"):
            raise ConfigError(
                "The cluster profile talks to MLflow through its tracking server: set "
                "MLOPS_MLFLOW_TRACKING_URI to its http(s):// URL and MLOPS_MLFLOW_DATABASE_URL "
                f"to its database (the tracking URI is {without_password(self.tracking_uri)})."
            )
        return self

    @property
    def shared(self) -> bool:
        """A platform shared by a team (production, cluster): tokens required, secrets not
        shown, PostgreSQL and Redis stores."""
        return self.profile in SERVER_PROFILES

    @property
    def uses_ray(self) -> bool:
        """An engine of this profile runs on Ray (the ingest's features or datasets)."""
        return "ray" in (self.compute_engine, self.dataset_engine)

    @property
    def uses_work_pool(self) -> bool:
        """Flows run on the workers of a Prefect work pool (cluster), not in this process."""
        return self.profile == "cluster"

    @property
    def data_dir(self) -> Path:
        """Offline store: validated bars and computed features as parquet."""
        return self.home / "offline"

    @property
    def feast_dir(self) -> Path:
        return self.home / "feast"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def prompts_dir(self) -> Path:
        """The git repository of prompt templates."""
        return self.prompts_repo_dir or self.home / "prompts"

    @property
    def metadata_url(self) -> str:
        return self.metadata_db_url or f"sqlite:///{self.home / 'mlops.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def tracking_database_url(self) -> str:
        """MLflow's database (its server's backend store when clients talk to a server)."""
        return self.mlflow_database_url or self.tracking_uri

    @property
    def artifacts_destination(self) -> str:
        return self.mlflow_artifacts_destination or str(self.home / "mlartifacts")

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def prefect_url(self) -> str:
        return self.prefect_api_url or self.own_prefect_url

    @property
    def own_prefect_url(self) -> str:
        """The API of the Prefect server `mlops up` starts (on `prefect_port`)."""
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @cached_property
    def token(self) -> str:
        """The API bearer token; the local profile makes one on first use and keeps it."""
        if self.api_token is not None:
            return self.api_token.get_secret_value()
        if self.shared:
            raise ConfigError(f"The {self.profile} profile needs MLOPS_API_TOKEN to be set.")
        path = self.home / "api_token"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            # Written under a temporary name, then linked: readers never see a partial token
            # and, of two processes starting together, the first link wins for both.
            tmp = self.home / f".api_token.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        token = path.read_text().strip()
        if not token:
            raise ConfigError(f"The API token file {path} is empty; delete it to make a new one.")
        return token

    @property
    def token_hint(self) -> str:
        """How to get the API token, for printing: the token itself only in the local
        profile (a file of this user's); never in production, where output goes to logs."""
        if self.shared or self.api_token is not None:
            return "the value of MLOPS_API_TOKEN (not shown)"
        return f"{self.token} (in {self.home / 'api_token'})"

    def shown_uri(self, uri: str) -> str:
        """A URI as responses show it: places in the state folder relative to it (a server's
        absolute paths are not the caller's business), credentials removed."""
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(uri)
        if parts.scheme in ("", "file"):
            path = Path(unquote(parts.path))
            if path.is_absolute() and path.is_relative_to(self.home):
                return path.relative_to(self.home).as_posix()
            return uri
        return without_password(uri)

    def mlflow_environment(self) -> dict[str, str]:
        """MLflow's client settings, which it reads from the environment: fail fast when
        its tracking server is down, and load the models the platform registered."""
        env = {
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.mlflow_http_timeout_s),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.mlflow_http_max_retries),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        }
        if self.mlflow_allow_pickle:
            env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
        return env

    def prefect_environment(self, use_server: bool) -> dict[str, str]:
        """Environment for Prefect: its state under the home folder, a server when running."""
        env = {
            "PREFECT_HOME": str(self.home / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
            "PREFECT_UI_ENABLED": "true",
            # The ingest's own messages (its Ray tasks' progress) in the flow run's log.
            "PREFECT_LOGGING_EXTRA_LOGGERS": "mlops.ingest",
        }
        if use_server:
            env["PREFECT_API_URL"] = self.prefect_url
        return env

    def prefect_server_environment(self) -> dict[str, str]:
        """What the Prefect server `mlops up` starts needs on top: its database and, in the
        cluster profile, messaging on Redis (Prefect's self-hosted set-up for more than one
        server or API), with prefect-redis's messaging, ordering and lease storage."""
        env: dict[str, str] = {}
        if self.prefect_database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.prefect_database_url
        if self.profile == "cluster" and self.redis_url:
            host, port, password = self.redis_address
            auth = f":{password}@" if password else ""
            env.update(
                {
                    "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
                    "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
                    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
                    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
                    "PREFECT_REDIS_MESSAGING_HOST": host,
                    "PREFECT_REDIS_MESSAGING_PORT": str(port),
                    "PREFECT_REDIS_MESSAGING_DB": str(self.prefect_redis_db),
                    # the background services' task queue (docket) on the same Redis
                    "PREFECT_SERVER_DOCKET_URL": f"redis://{auth}{host}:{port}/"
                    f"{self.prefect_redis_db}",
                }
            )
            if password:
                env["PREFECT_REDIS_MESSAGING_PASSWORD"] = password
        return env

    @property
    def redis_address(self) -> tuple[str, int, str | None]:
        """(host, port, password) of `redis_url`, written as Feast writes its Redis
        connection string: `host:port[,password=...][,ssl=true]`."""
        first, *options = (self.redis_url or "").removeprefix("redis://").split(",")
        host, _, port = first.partition(":")
        password = next(
            (o.split("=", 1)[1] for o in options if o.strip().startswith("password=")), None
        )
        return host or "127.0.0.1", int(port.split("/")[0] or 6379), password

    def ensure_dirs(self) -> None:
        for path in (
            self.home,
            self.data_dir,
            self.feast_dir,
            self.datasets_dir,
            self.reports_dir,
            self.run_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)


def without_password(url: str) -> str:
    """`url` with the password of its user part, or a `password=` option, masked."""
    import re

    url = re.sub(r"(?<=://)([^/@:]*):[^/]*@", r"\1:***@", url)
    url = re.sub(r"(?<=^https://)[^/:@]+@|(?<=^http://)[^/:@]+@", "***@", url)  # a token
    return re.sub(r"(password=)[^,;&\s]*", r"\1***", url, flags=re.IGNORECASE)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings for this process (keyword arguments win over everything)."""
    return Settings(**overrides)


def process_environment() -> dict[str, str]:
    """A copy of this process's environment, for starting child processes."""
    return dict(os.environ)
