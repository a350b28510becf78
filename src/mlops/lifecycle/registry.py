"""The model registry as the platform shows it: each registered model with its versions and a
stage per version, Production / Staging / Archived / None, read from MLflow aliases
(`production`, `staging`) and an `archived` version tag, never from MLflow's deprecated stages.

The list is read from MLflow's registry tables in a fixed number of queries (models, versions,
aliases, version tags, key metrics of the source runs), whatever the number of models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from mlops.errors import NotFoundError
from mlops.fields import PageNumber, UtcDatetime
from mlops.lifecycle import mlflow_backend
from mlops.lifecycle.metrics import finite_or_none
from mlops.lifecycle.mlflow_backend import escape_like, ms_to_datetime
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

Stage = Literal["Production", "Staging", "Archived", "None"]
STAGES: tuple[str, ...] = ("Production", "Staging", "Archived", "None")
PRODUCTION_ALIAS = "production"
STAGING_ALIAS = "staging"
ARCHIVED_TAG = "archived"
KEY_METRICS = ("accuracy", "roc_auc", "f1", "log_loss", "brier")


class ModelVersionInfo(BaseModel):
    name: str
    version: str
    stage: Stage
    aliases: list[str]
    metrics: dict[str, float]
    run_id: str | None
    source: str
    status: str
    description: str
    tags: dict[str, str]
    created: UtcDatetime | None
    updated: UtcDatetime | None


class RegisteredModelInfo(BaseModel):
    name: str
    description: str
    created: UtcDatetime | None
    updated: UtcDatetime | None
    production_version: str | None
    staging_version: str | None
    versions: list[ModelVersionInfo]


class ModelQuery(BaseModel):
    stage: Stage | None = Field(default=None, description="Only versions in this stage.")
    search: str | None = Field(default=None, max_length=200, description="Substring of name.")
    page: PageNumber = 1
    page_size: int = Field(default=50, ge=1, le=200)


class ModelPage(BaseModel):
    items: list[RegisteredModelInfo]
    total: int
    page: int
    page_size: int


def stage_of(aliases: list[str], tags: dict[str, str]) -> Stage:
    """Production and staging come from aliases; archived from the version's marker tag."""
    if PRODUCTION_ALIAS in aliases:
        return "Production"
    if STAGING_ALIAS in aliases:
        return "Staging"
    if tags.get(ARCHIVED_TAG) == "true":
        return "Archived"
    return "None"


def list_models(settings: Settings, query: ModelQuery, exact_name: str | None = None) -> ModelPage:
    """Registered models with their versions and stages, filtered by stage and name.

    MLflow keeps prompts (the published prompt versions) as registered models tagged
    `mlflow.prompt.is_prompt`; they are not models and never listed, shown or deployed."""
    from mlflow.prompt.constants import IS_PROMPT_TAG_KEY
    from mlflow.store.model_registry.dbmodels.models import (
        SqlRegisteredModel,
        SqlRegisteredModelTag,
    )
    from sqlalchemy import and_, exists, func, select

    engine = mlflow_backend.tracking_engine(settings)
    is_prompt = exists().where(
        and_(
            SqlRegisteredModelTag.name == SqlRegisteredModel.name,
            SqlRegisteredModelTag.key == IS_PROMPT_TAG_KEY,
            func.lower(SqlRegisteredModelTag.value) == "true",
        )
    )
    statement: Any = (
        select(
            SqlRegisteredModel.name,
            SqlRegisteredModel.description,
            SqlRegisteredModel.creation_time,
            SqlRegisteredModel.last_updated_time,
        )
        .where(~is_prompt)
        .order_by(SqlRegisteredModel.name)
    )
    if exact_name is not None:
        statement = statement.where(SqlRegisteredModel.name == exact_name)
    if query.search:
        pattern = f"%{escape_like(query.search.lower())}%"
        statement = statement.where(func.lower(SqlRegisteredModel.name).like(pattern, escape="\\"))
    with engine.connect() as conn:
        models = conn.execute(statement).all()
        versions = _versions_of(conn, [m.name for m in models])
    items = []
    for model in models:
        model_versions = versions.get(model.name, [])
        aliases = {alias: v.version for v in model_versions for alias in v.aliases}
        if query.stage is not None:
            model_versions = [v for v in model_versions if v.stage == query.stage]
            if not model_versions:
                continue
        items.append(
            RegisteredModelInfo(
                name=model.name,
                description=model.description or "",
                created=ms_to_datetime(model.creation_time),
                updated=ms_to_datetime(model.last_updated_time),
                production_version=aliases.get(PRODUCTION_ALIAS),
                staging_version=aliases.get(STAGING_ALIAS),
                versions=model_versions,
            )
        )
    start = (query.page - 1) * query.page_size
    return ModelPage(
        items=items[start : start + query.page_size],
        total=len(items),
        page=query.page,
        page_size=query.page_size,
    )


def _versions_of(conn: Any, names: list[str]) -> dict[str, list[ModelVersionInfo]]:
    """Versions of the named models, newest first, with aliases, tags and key run metrics."""
    from mlflow.store.model_registry.dbmodels.models import (
        SqlModelVersion,
        SqlModelVersionTag,
        SqlRegisteredModelAlias,
    )
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric
    from sqlalchemy import select

    if not names:
        return {}
    rows = conn.execute(
        select(
            SqlModelVersion.name,
            SqlModelVersion.version,
            SqlModelVersion.run_id,
            SqlModelVersion.source,
            SqlModelVersion.status,
            SqlModelVersion.description,
            SqlModelVersion.creation_time,
            SqlModelVersion.last_updated_time,
        )
        .where(SqlModelVersion.name.in_(names), SqlModelVersion.current_stage != "Deleted_Internal")
        .order_by(SqlModelVersion.name, SqlModelVersion.version.desc())
    ).all()
    aliases: dict[tuple[str, int], list[str]] = {}
    for name, alias, version in conn.execute(
        select(
            SqlRegisteredModelAlias.name,
            SqlRegisteredModelAlias.alias,
            SqlRegisteredModelAlias.version,
        ).where(SqlRegisteredModelAlias.name.in_(names))
    ):
        aliases.setdefault((name, int(version)), []).append(alias)
    tags: dict[tuple[str, int], dict[str, str]] = {}
    for name, version, key, value in conn.execute(
        select(
            SqlModelVersionTag.name,
            SqlModelVersionTag.version,
            SqlModelVersionTag.key,
            SqlModelVersionTag.value,
        ).where(SqlModelVersionTag.name.in_(names))
    ):
        tags.setdefault((name, int(version)), {})[key] = value or ""
    run_ids = sorted({row.run_id for row in rows if row.run_id})
    metrics: dict[str, dict[str, float]] = {}
    if run_ids:
        for run_id, key, value in conn.execute(
            select(SqlLatestMetric.run_uuid, SqlLatestMetric.key, SqlLatestMetric.value).where(
                SqlLatestMetric.run_uuid.in_(run_ids), SqlLatestMetric.key.in_(KEY_METRICS)
            )
        ):
            finite = finite_or_none(value)
            if finite is not None:
                metrics.setdefault(run_id, {})[key] = finite
    result: dict[str, list[ModelVersionInfo]] = {}
    for row in rows:
        key = (row.name, int(row.version))
        version_aliases = sorted(aliases.get(key, []))
        version_tags = tags.get(key, {})
        result.setdefault(row.name, []).append(
            ModelVersionInfo(
                name=row.name,
                version=str(row.version),
                stage=stage_of(version_aliases, version_tags),
                aliases=version_aliases,
                metrics=metrics.get(row.run_id or "", {}),
                run_id=row.run_id,
                source=row.source or "",
                status=row.status or "",
                description=row.description or "",
                tags=version_tags,
                created=ms_to_datetime(row.creation_time),
                updated=ms_to_datetime(row.last_updated_time),
            )
        )
    return result


def alias_version(settings: Settings, name: str, alias: str) -> str | None:
    """The version an alias points to, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_backend.client(settings).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def load_version(settings: Settings, name: str, version: str) -> PyFuncModel:
    """Load a registered version as a pyfunc model (predict returns class probabilities).

    The artifact location comes from this platform's client, so loading depends on no
    process-wide MLflow URI (several settings can live in one process).
    """
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(mlflow_backend.model_version_location(settings, name, version))


def get_model(settings: Settings, name: str) -> RegisteredModelInfo:
    """One registered model with all its versions (404 if unknown)."""
    page = list_models(settings, ModelQuery(), exact_name=name)
    if page.items:
        return page.items[0]
    raise NotFoundError(f"No registered model '{name}'.", {"model": name})


def get_version(settings: Settings, name: str, version: str) -> ModelVersionInfo:
    """One version of a registered model (404 if the model or the version is unknown)."""
    model = get_model(settings, name)
    for item in model.versions:
        if item.version == str(version):
            return item
    known = ", ".join(v.version for v in model.versions) or "none"
    raise NotFoundError(
        f"Model '{name}' has no version '{version}' (versions: {known}).",
        {"model": name, "version": version},
    )
