"""Experiments: summaries for a list page, creation, detail with runs, metric history
(comparisons are in `comparison.py`).

The list reads MLflow's own tables (through MLflow's SQLAlchemy models) with a fixed number
of queries per page, whatever the number of experiments: run counts and best metrics are
aggregated by the database, not with one `search_runs` per experiment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from mlops.errors import InvalidInputError, NotFoundError
from mlops.fields import PageNumber, UtcDatetime
from mlops.lifecycle import mlflow_backend
from mlops.lifecycle.metrics import finite_or_none, higher_is_better
from mlops.lifecycle.mlflow_backend import escape_like, ms_to_datetime
from mlops.names import EXPERIMENT_NAME
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow.entities import Run

EXPERIMENT_NAME_PATTERN = f"^{EXPERIMENT_NAME.body}$"
"""For the OpenAPI schema; the validator checks the whole value (no trailing newline)."""
SORT_FIELDS = ("name", "created", "updated", "run_count", "status")
MAX_PAGE_SIZE = 200


class ExperimentCreate(BaseModel):
    name: Annotated[str, AfterValidator(EXPERIMENT_NAME.validate)] = Field(
        pattern=EXPERIMENT_NAME_PATTERN,
        description="1-200 characters: letters, digits, space, '_', '.', '-', '/'; "
        "starts with a letter or digit.",
    )
    description: str = Field(default="", max_length=5000)
    tags: dict[str, str] = Field(default_factory=dict)


class ExperimentQuery(BaseModel):
    """Page, sort and filters of the experiment list."""

    page: PageNumber = 1
    page_size: int = Field(default=50, ge=1, le=MAX_PAGE_SIZE)
    sort: str = Field(
        default="updated",
        description="name, created, updated, run_count, "
        "status, or metric:<name> (the best value of that metric).",
    )
    order: Literal["asc", "desc"] = "desc"
    status: Literal["active", "deleted", "all"] = "active"
    search: str | None = Field(default=None, max_length=200, description="Substring of name.")
    tag: str | None = Field(default=None, description="key=value, or key alone.")
    metric: str = Field(default="roc_auc", description="The metric summarised as 'best'.")


class BestMetric(BaseModel):
    metric: str
    value: float | None
    higher_is_better: bool


class ExperimentSummary(BaseModel):
    id: str
    name: str
    status: str
    description: str
    tags: dict[str, str]
    run_count: int
    best: BestMetric
    latest_run_id: str | None
    latest_metrics: dict[str, float]
    created: UtcDatetime | None
    updated: UtcDatetime | None
    artifact_location: str


class ExperimentPage(BaseModel):
    items: list[ExperimentSummary]
    total: int
    page: int
    page_size: int


class RunSummary(BaseModel):
    run_id: str
    name: str
    status: str
    start_time: UtcDatetime | None
    end_time: UtcDatetime | None
    duration_seconds: float | None
    params: dict[str, str]
    metrics: dict[str, float | None]
    tags: dict[str, str]


class ExperimentDetail(BaseModel):
    experiment: ExperimentSummary
    runs: list[RunSummary]
    next_page_token: str | None


class MetricPoint(BaseModel):
    step: int
    value: float | None
    timestamp: UtcDatetime


class MetricHistory(BaseModel):
    run_id: str
    metric: str
    points: list[MetricPoint]


def _sort_key(query: ExperimentQuery) -> tuple[str, str | None]:
    if query.sort.startswith("metric:"):
        metric = query.sort.removeprefix("metric:")
        if not metric:
            raise InvalidInputError("sort=metric:<name> needs a metric name.")
        return "metric", metric
    if query.sort not in SORT_FIELDS:
        raise InvalidInputError(
            f"Unknown sort '{query.sort}': use one of {', '.join(SORT_FIELDS)} or metric:<name>.",
            {"sort": query.sort},
        )
    return query.sort, None


AGGREGATE_SORTS = ("updated", "run_count", "metric")


def _summary_select(metric: str, dialect: str, scope: Any) -> tuple[Any, dict[str, Any]]:
    """SELECT of the experiments whose ids `scope` selects, with their run count, last
    activity and best `metric` (NaN and infinities excluded); and the sortable columns.

    The run aggregates are computed for the scope only, not for every run of the store.
    """
    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlLatestMetric, SqlRun
    from sqlalchemy import func, select

    from mlops.lifecycle.metrics import MAX_FINITE

    runs = (
        select(
            SqlRun.experiment_id.label("experiment_id"),
            func.count().label("run_count"),
            func.max(func.coalesce(SqlRun.end_time, SqlRun.start_time)).label("last_run_time"),
        )
        .where(SqlRun.lifecycle_stage == "active", SqlRun.experiment_id.in_(scope))
        .group_by(SqlRun.experiment_id)
        .subquery()
    )
    aggregate = func.max if higher_is_better(metric) else func.min
    best = (
        select(
            SqlRun.experiment_id.label("experiment_id"),
            aggregate(SqlLatestMetric.value).label("best"),
        )
        .join(SqlLatestMetric, SqlLatestMetric.run_uuid == SqlRun.run_uuid)
        .where(
            SqlRun.lifecycle_stage == "active",
            SqlRun.experiment_id.in_(scope),
            SqlLatestMetric.key == metric,
            SqlLatestMetric.is_nan.is_(False),
            func.abs(SqlLatestMetric.value) < MAX_FINITE,
        )
        .group_by(SqlRun.experiment_id)
        .subquery()
    )
    run_count = func.coalesce(runs.c.run_count, 0)
    larger = func.max if dialect == "sqlite" else func.greatest  # SQLite's 2-argument max
    updated = larger(
        func.coalesce(SqlExperiment.last_update_time, SqlExperiment.creation_time, 0),
        func.coalesce(runs.c.last_run_time, 0),
    )
    statement = (
        select(
            SqlExperiment.experiment_id,
            SqlExperiment.name,
            SqlExperiment.lifecycle_stage,
            SqlExperiment.creation_time,
            SqlExperiment.artifact_location,
            run_count.label("run_count"),
            updated.label("updated"),
            best.c.best,
        )
        .outerjoin(runs, runs.c.experiment_id == SqlExperiment.experiment_id)
        .outerjoin(best, best.c.experiment_id == SqlExperiment.experiment_id)
        .where(SqlExperiment.experiment_id.in_(scope))
    )
    columns = {**_plain_sorts(), "updated": updated, "run_count": run_count, "metric": best.c.best}
    return statement, columns


def _plain_sorts() -> dict[str, Any]:
    from mlflow.store.tracking.dbmodels.models import SqlExperiment

    return {
        "name": SqlExperiment.name,
        "created": SqlExperiment.creation_time,
        "status": SqlExperiment.lifecycle_stage,
    }


def _filtered(statement: Any, query: ExperimentQuery, only_ids: list[int] | None) -> Any:
    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlExperimentTag
    from sqlalchemy import and_, exists, func

    if only_ids is not None:
        statement = statement.where(SqlExperiment.experiment_id.in_(only_ids))
    if query.status != "all":
        statement = statement.where(SqlExperiment.lifecycle_stage == query.status)
    if query.search:
        pattern = f"%{escape_like(query.search.lower())}%"
        statement = statement.where(func.lower(SqlExperiment.name).like(pattern, escape="\\"))
    if query.tag:
        key, sep, value = query.tag.partition("=")
        condition = and_(
            SqlExperimentTag.experiment_id == SqlExperiment.experiment_id,
            SqlExperimentTag.key == key,
        )
        if sep:
            condition = and_(condition, SqlExperimentTag.value == value)
        statement = statement.where(exists().where(condition))
    return statement


def list_experiments(
    settings: Settings, query: ExperimentQuery, only_ids: list[int] | None = None
) -> ExperimentPage:
    """One page of experiment summaries in four SQL statements, whatever their number.

    Sorting by a plain column picks the page's ids first and aggregates the runs of those
    experiments only; sorting by an aggregate aggregates the runs of the matching ones.
    """
    from mlflow.store.tracking.dbmodels.models import SqlExperiment
    from sqlalchemy import func, select

    sort, sort_metric = _sort_key(query)
    metric = sort_metric or query.metric
    engine = mlflow_backend.tracking_engine(settings)
    matching = _filtered(select(SqlExperiment.experiment_id), query, only_ids)
    offset = (query.page - 1) * query.page_size
    if sort in AGGREGATE_SORTS:
        scope = matching
    else:
        plain = _plain_sorts()[sort]
        scope = matching.order_by(_direction(plain, query.order), SqlExperiment.experiment_id)
        scope = scope.limit(query.page_size).offset(offset)
        offset = 0
    statement, columns = _summary_select(metric, engine.dialect.name, scope.scalar_subquery())
    page = (
        statement.order_by(_direction(columns[sort], query.order), SqlExperiment.experiment_id)
        .limit(query.page_size)
        .offset(offset)
    )
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(matching.subquery())).scalar_one()
        rows = conn.execute(page).all()
        ids = [row.experiment_id for row in rows]
        tags = _experiment_tags(conn, ids)
        latest = _latest_run_metrics(conn, ids)
    items = [
        _summary(
            row,
            metric,
            tags.get(row.experiment_id, {}),
            latest.get(row.experiment_id),
            settings.shown_uri(row.artifact_location or ""),
        )
        for row in rows
    ]
    return ExperimentPage(items=items, total=total, page=query.page, page_size=query.page_size)


def _direction(column: Any, order: str) -> Any:
    return (column.asc() if order == "asc" else column.desc()).nulls_last()


def _summary(
    row: Any,
    metric: str,
    tags: dict[str, str],
    latest: tuple[str, dict[str, float]] | None,
    artifact_location: str,
) -> ExperimentSummary:
    run_id, metrics = latest or (None, {})
    return ExperimentSummary(
        id=str(row.experiment_id),
        name=row.name,
        status=row.lifecycle_stage,
        description=tags.get(mlflow_backend.DESCRIPTION_TAG, ""),
        tags={k: v for k, v in tags.items() if not k.startswith("mlflow.")},
        run_count=row.run_count,
        best=BestMetric(
            metric=metric, value=finite_or_none(row.best), higher_is_better=higher_is_better(metric)
        ),
        latest_run_id=run_id,
        latest_metrics=metrics,
        created=ms_to_datetime(row.creation_time),
        updated=ms_to_datetime(row.updated),
        artifact_location=artifact_location,
    )


def _experiment_tags(conn: Any, ids: list[int]) -> dict[int, dict[str, str]]:
    from mlflow.store.tracking.dbmodels.models import SqlExperimentTag
    from sqlalchemy import select

    tags: dict[int, dict[str, str]] = {}
    if not ids:
        return tags
    statement: Any = select(
        SqlExperimentTag.experiment_id, SqlExperimentTag.key, SqlExperimentTag.value
    ).where(SqlExperimentTag.experiment_id.in_(ids))
    for experiment_id, key, value in conn.execute(statement):
        tags.setdefault(experiment_id, {})[key] = value or ""
    return tags


def _latest_run_metrics(conn: Any, ids: list[int]) -> dict[int, tuple[str, dict[str, float]]]:
    """Per experiment: its most recently started run and that run's latest metric values."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlRun
    from sqlalchemy import func, select

    if not ids:
        return {}
    ranked = (
        select(
            SqlRun.experiment_id,
            SqlRun.run_uuid,
            func.row_number()
            .over(
                partition_by=SqlRun.experiment_id,
                order_by=(SqlRun.start_time.desc(), SqlRun.run_uuid.desc()),
            )
            .label("rank"),
        )
        .where(SqlRun.experiment_id.in_(ids), SqlRun.lifecycle_stage == "active")
        .subquery()
    )
    statement = (
        select(
            ranked.c.experiment_id,
            ranked.c.run_uuid,
            SqlLatestMetric.key,
            SqlLatestMetric.value,
            SqlLatestMetric.is_nan,
        )
        .outerjoin(SqlLatestMetric, SqlLatestMetric.run_uuid == ranked.c.run_uuid)
        .where(ranked.c.rank == 1)
    )
    latest: dict[int, tuple[str, dict[str, float]]] = {}
    for experiment_id, run_id, key, value, is_nan in conn.execute(statement):
        entry = latest.setdefault(experiment_id, (run_id, {}))
        finite = finite_or_none(value)
        if key is not None and finite is not None and not is_nan:
            entry[1][key] = finite
    return latest


CREATED_BY_TAG = "mlops.created_by"
"""The user who created an experiment through the platform (MLflow keeps no creator)."""


def create_experiment(
    settings: Settings, request: ExperimentCreate, caller: str
) -> ExperimentSummary:
    """Create an experiment, tagged with the user who asked (409 if the name is taken,
    even by a deleted one)."""
    tags = {**request.tags, CREATED_BY_TAG: caller}
    experiment_id = mlflow_backend.create_experiment(
        settings, request.name, request.description, tags
    )
    return get_experiment_summary(settings, experiment_id)


def resolve_experiment(settings: Settings, ref: str) -> Any:
    from mlflow.exceptions import MlflowException

    mlflow_client = mlflow_backend.client(settings)
    experiment = None
    if ref.isdigit():
        try:
            experiment = mlflow_client.get_experiment(ref)
        except MlflowException:
            experiment = None
    if experiment is None:
        experiment = mlflow_client.get_experiment_by_name(ref)
    if experiment is None:
        raise NotFoundError(f"No experiment with id or name '{ref}'.", {"experiment": ref})
    return experiment


def get_experiment_summary(settings: Settings, ref: str) -> ExperimentSummary:
    """The list summary of one experiment, by id or name."""
    experiment = resolve_experiment(settings, ref)
    page = list_experiments(
        settings, ExperimentQuery(status="all"), only_ids=[int(experiment.experiment_id)]
    )
    return page.items[0]


def run_summary(run: Run) -> RunSummary:
    start, end = run.info.start_time, run.info.end_time
    return RunSummary(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id,
        status=run.info.status,
        start_time=ms_to_datetime(start),
        end_time=ms_to_datetime(end),
        duration_seconds=(end - start) / 1000 if start and end else None,
        params=dict(run.data.params),
        metrics={k: finite_or_none(v) for k, v in run.data.metrics.items()},
        tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
    )


def get_experiment(
    settings: Settings,
    ref: str,
    max_runs: int = 100,
    page_token: str | None = None,
    order_by: str = "start_time DESC",
    filter_string: str = "",
) -> ExperimentDetail:
    """An experiment's summary and a page of its runs (one `search_runs`)."""
    from mlflow.exceptions import MlflowException

    summary = get_experiment_summary(settings, ref)
    order = order_by if order_by.startswith(("start_time", "metrics.", "params.", "attr")) else ""
    if not order:
        raise InvalidInputError(
            f"Unknown run order '{order_by}': use start_time, metrics.<name> or params.<name>, "
            "followed by ASC or DESC."
        )
    try:
        runs = mlflow_backend.client(settings).search_runs(
            [summary.id],
            filter_string=filter_string,
            order_by=[order],
            max_results=max_runs,
            page_token=page_token,
        )
    except MlflowException as exc:
        raise InvalidInputError(f"Invalid run filter or order: {exc.message}") from exc
    return ExperimentDetail(
        experiment=summary, runs=[run_summary(r) for r in runs], next_page_token=runs.token
    )


def get_run(settings: Settings, run_id: str) -> RunSummary:
    from mlflow.exceptions import MlflowException

    try:
        return run_summary(mlflow_backend.client(settings).get_run(run_id))
    except MlflowException as exc:
        raise NotFoundError(f"No run '{run_id}'.", {"run_id": run_id}) from exc


def metric_history(settings: Settings, run_id: str, metric: str) -> MetricHistory:
    """Every logged value of one metric of a run, by step (NaN and infinities as null).

    One query when the metric exists; the run is read only to explain a 404.
    """
    from mlflow.exceptions import MlflowException

    try:
        history = mlflow_backend.client(settings).get_metric_history(run_id, metric)
    except MlflowException as exc:
        raise NotFoundError(f"No run '{run_id}'.", {"run_id": run_id}) from exc
    if not history:
        known = sorted(get_run(settings, run_id).metrics)
        raise NotFoundError(
            f"Run {run_id} has no metric '{metric}': it has {', '.join(known)}.",
            {"run_id": run_id, "metric": metric, "known": known},
        )
    points = [
        MetricPoint(
            step=m.step,
            value=finite_or_none(m.value),
            timestamp=ms_to_datetime(m.timestamp) or datetime.now(UTC),
        )
        for m in sorted(history, key=lambda m: (m.step, m.timestamp))
    ]
    return MetricHistory(run_id=run_id, metric=metric, points=points)
