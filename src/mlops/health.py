"""Health of each store and service the platform depends on.

The probes run in parallel, each bounded by `health_probe_timeout_s`: a hung store makes
its own component "down" without holding the others or the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import httpx
from pydantic import BaseModel, Field
from sqlalchemy import text

from mlops.db import engine_for
from mlops.errors import MlopsError
from mlops.features.offline import FEATURES_FILE
from mlops.features.offline_state import open_snapshot
from mlops.settings import Settings
from mlops.stores import (
    FEATURE_REGISTRY,
    MLFLOW_STORE,
    ONLINE_STORE,
    PLATFORM_DB,
    describe_url,
    store_outage,
)

SERVICES = ("prefect", "mlflow")
"""Components that are servers of `mlops up` rather than stores."""


class ComponentHealth(BaseModel):
    store: str
    status: str
    detail: str
    latency_ms: float


class Health(BaseModel):
    status: str
    components: dict[str, ComponentHealth]
    flags: list[str] = Field(
        default_factory=list,
        description="What needs a person although every store answers: aliases moved "
        "outside the platform and not acknowledged yet.",
    )


def _probe(store: str, check: Callable[[], str], show_details: bool) -> ComponentHealth:
    started = time.perf_counter()
    try:
        detail = check()
        status = "ok"
    except MlopsError as exc:
        detail, status = exc.message, "down"
    except Exception as exc:
        outage = store_outage(exc, store)
        detail = outage.message if outage else f"{type(exc).__name__}: {exc}"[:300]
        status = "down"
    if not show_details:
        detail = status
    return ComponentHealth(
        store=store,
        status=status,
        detail=detail,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def _metadata(settings: Settings) -> str:
    with engine_for(settings.metadata_url).connect() as conn:
        conn.execute(text("SELECT 1"))
    return describe_url(settings.metadata_url)


def _tracking(settings: Settings) -> str:
    from mlops.lifecycle.mlflow_backend import is_database, tracking_store_experiments

    uri = settings.tracking_uri
    if not is_database(uri):
        return _http(f"{uri.rstrip('/')}/health", settings.mlflow_http_timeout_s)()
    count = tracking_store_experiments(uri, settings.metadata_url)
    return "new store, created on first use" if count is None else f"{count} experiments"


def _registry(settings: Settings) -> str:
    from mlops.features.store import open_store

    views = open_store(settings).list_feature_views()
    return f"{len(views)} feature views"


def _offline(settings: Settings) -> str:
    snapshot = open_snapshot(settings)
    if snapshot is None or not snapshot.has(FEATURES_FILE):
        raise FileNotFoundError("no offline data yet: run `mlops ingest`")
    index = snapshot.tickers()
    months = len(snapshot.partitions(FEATURES_FILE))
    return f"{int(index['bars'].sum())} bars of {len(index)} tickers in {months} months"


def _online(settings: Settings) -> str:
    if settings.shared:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        host, port, password = settings.redis_address
        redis.Redis(
            host=host,
            port=port,
            password=password,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),  # the default retries take 7-11 s to say "down"
        ).ping()
        return f"redis {host}:{port}"
    path = settings.feast_dir / "online.db"
    if not path.exists():
        raise FileNotFoundError("online store not materialized yet")
    return "sqlite"


def _http(url: str, timeout: float = 2) -> Callable[[], str]:
    def check() -> str:
        response = httpx.get(url, timeout=timeout)
        response.raise_for_status()
        return url

    return check


def health_lines(health: Health) -> list[str]:
    """One rich-markup line per component, green when ok and red when down, then one
    yellow line per flag."""
    return [
        f"[{'green' if c.status == 'ok' else 'red'}]{c.status:>5}[/] {name}: {c.detail}"
        for name, c in health.components.items()
    ] + [f"[yellow] flag[/] {flag}" for flag in health.flags]


def _flags(settings: Settings) -> list[str]:
    """The external alias moves no approver acknowledged (empty when the database is
    down: its component says so)."""
    from mlops.lifecycle import ledger

    try:
        moved = ledger.unacknowledged(settings)
    except Exception:
        return []
    return [
        f"{c.alias} of {c.model_name} was moved outside the platform (v{c.from_version} -> "
        f"v{c.to_version}, seen {c.changed_at:%Y-%m-%d %H:%M} UTC): an approver acknowledges "
        f"it (mlops models acknowledge {c.model_name})"
        for c in sorted(moved, key=lambda c: (c.model_name, c.alias))
    ] + _prompt_flags(settings)


def _prompt_flags(settings: Settings) -> list[str]:
    """The prompts' live tags recorded as moved outside the platform, not acknowledged."""
    if not (settings.prompts_dir / ".git").exists():
        return []
    from mlops.prompts.publishing import label_moved_outside
    from mlops.prompts.store import open_store

    try:
        store = open_store(settings)
        store.index.refresh()
        states = sorted(store.index.templates.items())
    except Exception:
        return []
    return [
        f"the live tag of prompt {name} was moved outside the platform (seen "
        f"{event.time:%Y-%m-%d %H:%M} UTC): an approver acknowledges it (mlops prompts "
        f"acknowledge {name})"
        for name, state in states
        if (event := label_moved_outside(state)) is not None
    ]


def check_health(settings: Settings, services: bool = False, show_details: bool = True) -> Health:
    """Probe each store (and, with services=True, the Prefect and MLflow servers of
    `mlops up`); without `show_details` only each component's store name and status."""
    checks: dict[str, tuple[str, Callable[[], str]]] = {
        "metadata_db": (PLATFORM_DB, lambda: _metadata(settings)),
        "mlflow_tracking": (MLFLOW_STORE, lambda: _tracking(settings)),
        "feast_registry": (FEATURE_REGISTRY, lambda: _registry(settings)),
        "offline_store": ("offline store", lambda: _offline(settings)),
        "online_store": (
            ONLINE_STORE if settings.shared else "online store (sqlite)",
            lambda: _online(settings),
        ),
    }
    if services or settings.prefect_api_url:
        checks["prefect"] = ("prefect api", _http(f"{settings.prefect_url}/health"))
    if services:
        checks["mlflow"] = ("mlflow server", _http(f"{settings.mlflow_url}/health"))
    import feast  # noqa: F401  # a cold import (seconds) is not the registry's answer time

    components = _run_probes(checks, settings.health_probe_timeout_s, show_details)
    ok = all(c.status == "ok" for c in components.values())
    flags = _flags(settings) if show_details and components["metadata_db"].status == "ok" else []
    return Health(status="ok" if ok else "degraded", components=components, flags=flags)


def _run_probes(
    checks: dict[str, tuple[str, Callable[[], str]]], timeout: float, show_details: bool
) -> dict[str, ComponentHealth]:
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="health")
    futures = {
        name: pool.submit(_probe, store, check, show_details)
        for name, (store, check) in checks.items()
    }
    done, _ = wait(futures.values(), timeout=timeout)
    pool.shutdown(wait=False, cancel_futures=True)  # a hung probe ends on its own timeout
    return {
        name: future.result()
        if future in done
        else ComponentHealth(
            store=checks[name][0],
            status="down",
            detail=f"no answer within {timeout:g} s" if show_details else "down",
            latency_ms=round(timeout * 1000, 2),
        )
        for name, future in futures.items()
    }
