"""Health of each store and service the platform depends on."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from pydantic import BaseModel
from sqlalchemy import text

from mlops.db import engine_for
from mlops.features.offline import FEATURES_FILE, consistency_problem
from mlops.settings import Settings


class ComponentHealth(BaseModel):
    status: str
    detail: str
    latency_ms: float


class Health(BaseModel):
    status: str
    components: dict[str, ComponentHealth]


def _probe(check: Callable[[], str], hide_details: bool) -> ComponentHealth:
    started = time.perf_counter()
    try:
        detail = check()
        status = "ok"
    except Exception as exc:
        detail, status = f"{type(exc).__name__}: {exc}"[:300], "down"
        if hide_details:
            detail = type(exc).__name__
    return ComponentHealth(
        status=status, detail=detail, latency_ms=round((time.perf_counter() - started) * 1000, 2)
    )


def _metadata(settings: Settings) -> str:
    with engine_for(settings.metadata_url).connect() as conn:
        conn.execute(text("SELECT 1"))
    return settings.metadata_url.split("@")[-1]


def _registry(settings: Settings) -> str:
    from mlops.features.store import open_store

    views = open_store(settings).list_feature_views()
    return f"{len(views)} feature views"


def _offline(settings: Settings) -> str:
    path = settings.data_dir / FEATURES_FILE
    if not path.exists():
        raise FileNotFoundError("no offline data yet: run `mlops ingest`")
    problem = consistency_problem(settings)
    if problem:
        raise RuntimeError(f"inconsistent ({problem}): run `mlops features repair`")
    return f"{path.stat().st_size} bytes of features"


def _online(settings: Settings) -> str:
    if settings.profile == "production":
        import redis

        host, _, port = (settings.redis_url or "").split(",")[0].partition(":")
        redis.Redis(host=host, port=int(port or 6379), socket_timeout=2).ping()
        return f"redis {host}:{port}"
    path = settings.feast_dir / "online.db"
    if not path.exists():
        raise FileNotFoundError("online store not materialized yet")
    return "sqlite"


def _http(url: str) -> Callable[[], str]:
    def check() -> str:
        response = httpx.get(url, timeout=2)
        response.raise_for_status()
        return url

    return check


def health_lines(health: Health) -> list[str]:
    """One rich-markup line per component, green when ok and red when down."""
    return [
        f"[{'green' if c.status == 'ok' else 'red'}]{c.status:>5}[/] {name}: {c.detail}"
        for name, c in health.components.items()
    ]


def check_health(settings: Settings, services: bool = False) -> Health:
    """Probe each store (and, with services=True, the Prefect and MLflow servers)."""
    checks: dict[str, Callable[[], str]] = {
        "metadata_db": lambda: _metadata(settings),
        "feast_registry": lambda: _registry(settings),
        "offline_store": lambda: _offline(settings),
        "online_store": lambda: _online(settings),
    }
    if services:
        checks["prefect"] = _http(f"{settings.prefect_url}/health")
        checks["mlflow"] = _http(f"{settings.mlflow_url}/health")
    # /healthz is open: in production, do not tell anonymous callers hosts or users.
    hide = settings.profile == "production"
    components = {name: _probe(check, hide) for name, check in checks.items()}
    ok = all(c.status == "ok" for c in components.values())
    return Health(status="ok" if ok else "degraded", components=components)
