"""The ledger of production and staging changes: every move of a model's `production` or
`staging` alias that the platform makes, append-only, in the platform's database.

Each change says who moved the alias, from which version to which (None: no version),
when, why, and the deployment or rollback it belongs to. `serving_at` answers which
version an alias pointed at, at any moment since the ledger began: the `to_version` of the
last change at or before it.

A change is recorded right after MLflow moved the alias (the two stores cannot share a
transaction), after the alias-move counter of `alias_moves.py` that serving processes
watch. If recording fails, the deployment still succeeds and its stage says so (the move
happened).

A move made outside the platform (in the MLflow UI, by a script) is found by comparing
each alias with the ledger's last change of it (`detect_external_moves`: one MLflow query
for all models, run by the API's scheduled reaper, and for one model before a rollback).
It is recorded as an `external` change (who: unknown), flagged by `/healthz` and on the
model's page, and blocks rollbacks of production until an approver acknowledges it
(`acknowledge`, an `acknowledged` change). Models whose deployment is running are skipped:
the platform moves aliases only inside one, and its record follows the MLflow move.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from mlops.db import AliasChange, Deployment, session_scope, utcnow
from mlops.errors import ConflictError, InvalidInputError
from mlops.fields import UtcDatetime
from mlops.lifecycle import alias_moves
from mlops.roles import Principal, Role
from mlops.settings import Settings

ChangeKind = Literal["platform", "external", "acknowledged"]
OUTSIDE = "outside the platform"
"""Who made an external change, as the ledger says it (MLflow does not tell)."""
ALIASES = ("production", "staging")


class AliasChangeInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    model_name: str
    alias: str
    from_version: str | None
    to_version: str | None
    changed_at: UtcDatetime
    changed_by: str
    reason: str
    deployment_id: str | None
    kind: ChangeKind = "platform"


def record(
    settings: Settings,
    model: str,
    alias: str,
    before: str | None,
    after: str | None,
    *,
    by: str,
    reason: str = "",
    deployment_id: str | None = None,
    kind: ChangeKind = "platform",
) -> AliasChangeInfo:
    """Count one move of `alias` for the serving processes, then record it (call it after
    MLflow moved it: the count first, so a failed record never leaves serving on the old
    version); the change recorded."""
    alias_moves.record_move(settings, model)
    row = AliasChange(
        model_name=model,
        alias=alias,
        from_version=before,
        to_version=after,
        changed_at=utcnow(),
        changed_by=by,
        reason=reason,
        deployment_id=deployment_id,
        kind=kind,
    )
    with session_scope(settings.metadata_url) as session:
        session.add(row)
        session.flush()
        return AliasChangeInfo.model_validate(row)


def _latest(settings: Settings, model: str | None = None) -> dict[tuple[str, str], AliasChange]:
    """The last change of each (model, alias) in the ledger (of `model`, if given)."""
    newest = select(func.max(AliasChange.id)).group_by(AliasChange.model_name, AliasChange.alias)
    if model is not None:
        newest = newest.where(AliasChange.model_name == model)
    with session_scope(settings.metadata_url) as session:
        rows = session.scalars(select(AliasChange).where(AliasChange.id.in_(newest))).all()
        return {(r.model_name, r.alias): r for r in rows}


def _deploying(settings: Settings) -> set[str]:
    """Models with a deployment pending or running (the platform may be moving an alias)."""
    with session_scope(settings.metadata_url) as session:
        return set(
            session.scalars(
                select(Deployment.model_name).where(Deployment.status.in_(("pending", "running")))
            )
        )


def _aliases_now(settings: Settings, model: str | None) -> dict[str, dict[str, str]]:
    """{model: {alias: version}} as MLflow shows it now: one paged search for all models,
    or one model."""
    from mlflow.exceptions import MlflowException

    from mlops.lifecycle import mlflow_backend

    client = mlflow_backend.client(settings)
    if model is not None:
        try:
            found = [client.get_registered_model(model)]
        except MlflowException:  # deleted in MLflow: nothing to compare
            return {}
    else:
        found, token = [], None
        while True:
            page = client.search_registered_models(max_results=1000, page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                break
    return {m.name: {a: str(v) for a, v in (m.aliases or {}).items()} for m in found}


def detect_external_moves(
    settings: Settings, model: str | None = None, expected: dict[str, str | None] | None = None
) -> list[AliasChangeInfo]:
    """Record, as `external` changes, the aliases whose version in MLflow is not the one
    the ledger's last change of them says (of every model the ledger knows, or of
    `model`); the changes it recorded. `expected` gives, for `model`, what an alias should
    point at when the ledger has no change of it yet (a deployment made before the
    ledger)."""
    latest = _latest(settings, model)
    wanted: dict[tuple[str, str], str | None] = {k: r.to_version for k, r in latest.items()}
    for alias, version in (expected or {}).items():
        if model is not None and (model, alias) not in wanted:
            wanted[(model, alias)] = version
    if not wanted:
        return []
    now = _aliases_now(settings, model)
    busy = _deploying(settings)
    seen = []
    for (name, alias), version in sorted(wanted.items()):
        if name not in now or name in busy:
            continue
        actual = now[name].get(alias)
        if actual == version:
            continue
        before, fresh = latest.get((name, alias)), _latest(settings, name).get((name, alias))
        if (fresh.id if fresh else None) != (before.id if before else None):
            continue  # the platform recorded a change meanwhile
        seen.append(
            record(
                settings,
                name,
                alias,
                version,
                actual,
                by=OUTSIDE,
                reason=f"{alias} was moved outside the platform (for example in the MLflow UI)",
                kind="external",
            )
        )
    return seen


def unacknowledged(settings: Settings, model: str | None = None) -> list[AliasChangeInfo]:
    """External moves no approver acknowledged and no platform move followed yet."""
    return [
        AliasChangeInfo.model_validate(row)
        for row in _latest(settings, model).values()
        if row.kind == "external"
    ]


def acknowledge(
    settings: Settings, model: str, caller: Principal, comment: str
) -> list[AliasChangeInfo]:
    """An approver acknowledges the model's external moves (each alias's latest): one
    `acknowledged` change each, which lets rollbacks run again. 409 when there is none."""
    from mlops.lifecycle.registry import get_model

    caller.require(Role.APPROVER, "Acknowledging a move made outside the platform")
    pending = unacknowledged(settings, model)
    if not pending:
        get_model(settings, model)  # 404 for a model that does not exist
        raise ConflictError(
            f"Model '{model}' has no move made outside the platform to acknowledge.",
            {"model": model},
        )
    return [
        record(
            settings,
            model,
            change.alias,
            change.to_version,
            change.to_version,
            by=caller.name,
            reason=comment,
            kind="acknowledged",
        )
        for change in pending
    ]


def history(
    settings: Settings, model: str, limit: int = 200, offset: int = 0
) -> list[AliasChangeInfo]:
    """The `limit` newest changes of `model`'s aliases after the `offset` newest, newest
    first."""
    with session_scope(settings.metadata_url) as session:
        rows = session.scalars(
            select(AliasChange)
            .where(AliasChange.model_name == model)
            .order_by(AliasChange.changed_at.desc(), AliasChange.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return [AliasChangeInfo.model_validate(row) for row in rows]


def serving_at(settings: Settings, model: str, alias: str, at: datetime) -> AliasChangeInfo | None:
    """The change that set what `alias` pointed at, at moment `at` (None: the ledger has
    no change of it before then). A naive `at` is UTC."""
    try:
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)  # as stored
    except OverflowError as exc:  # year 1 with a positive offset, year 9999 with a negative
        raise InvalidInputError(f"{at.isoformat()} is out of range.", {"at": str(at)}) from exc
    with session_scope(settings.metadata_url) as session:
        row = session.scalars(
            select(AliasChange)
            .where(
                AliasChange.model_name == model,
                AliasChange.alias == alias,
                AliasChange.changed_at <= at,
            )
            .order_by(AliasChange.changed_at.desc(), AliasChange.id.desc())
            .limit(1)
        ).first()
        return None if row is None else AliasChangeInfo.model_validate(row)


class ModelHistory(BaseModel):
    model_name: str
    changes: list[AliasChangeInfo] = Field(
        description="Moves of production and staging, newest first (`limit` of them after "
        "the `offset` newest)."
    )
    at: UtcDatetime | None = Field(description="The moment asked about, if any.")
    production_at: str | None = Field(
        description="The version production pointed at, at `at` (null: none)."
    )
    staging_at: str | None


def model_history(
    settings: Settings,
    model: str,
    at: datetime | None = None,
    limit: int = 200,
    offset: int = 0,
) -> ModelHistory:
    """The newest changes of `model`'s aliases (a page of them) and, with `at`, the
    versions production and staging pointed at then (`NotFoundError` for a model that does
    not exist)."""
    from mlops.lifecycle.registry import get_model

    changes = history(settings, model, limit, offset)
    if not changes:
        get_model(settings, model)  # 404 for a model that does not exist

    def pointed(alias: str) -> str | None:
        change = serving_at(settings, model, alias, at) if at is not None else None
        return None if change is None else change.to_version

    return ModelHistory(
        model_name=model,
        changes=changes,
        at=at,
        production_at=pointed("production"),
        staging_at=pointed("staging"),
    )
