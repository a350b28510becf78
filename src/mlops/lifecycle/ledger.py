"""The ledger of production and staging changes: every move of a model's `production` or
`staging` alias that the platform makes, append-only, in the platform's database.

Each change says who moved the alias, from which version to which (None: no version),
when, why, and the deployment or rollback it belongs to. `serving_at` answers which
version an alias pointed at, at any moment since the ledger began: the `to_version` of the
last change at or before it.

A change is recorded right after MLflow moved the alias (the two stores cannot share a
transaction), after the alias-move counter of `alias_moves.py` that serving processes
watch. If recording fails, the deployment still succeeds and its stage says so (the move
happened). A move made outside the platform (the MLflow UI) is not in the ledger.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from mlops.db import AliasChange, session_scope, utcnow
from mlops.errors import InvalidInputError
from mlops.fields import UtcDatetime
from mlops.lifecycle import alias_moves
from mlops.settings import Settings


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
) -> None:
    """Count one move of `alias` for the serving processes, then record it (call it after
    MLflow moved it: the count first, so a failed record never leaves serving on the old
    version)."""
    alias_moves.record_move(settings, model)
    with session_scope(settings.metadata_url) as session:
        session.add(
            AliasChange(
                model_name=model,
                alias=alias,
                from_version=before,
                to_version=after,
                changed_at=utcnow(),
                changed_by=by,
                reason=reason,
                deployment_id=deployment_id,
            )
        )


def history(settings: Settings, model: str, limit: int = 200) -> list[AliasChangeInfo]:
    """The `limit` newest changes of `model`'s aliases, newest first."""
    with session_scope(settings.metadata_url) as session:
        rows = session.scalars(
            select(AliasChange)
            .where(AliasChange.model_name == model)
            .order_by(AliasChange.changed_at.desc(), AliasChange.id.desc())
            .limit(limit)
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
        description="The 200 newest moves of production and staging, newest first."
    )
    at: UtcDatetime | None = Field(description="The moment asked about, if any.")
    production_at: str | None = Field(
        description="The version production pointed at, at `at` (null: none)."
    )
    staging_at: str | None


def model_history(settings: Settings, model: str, at: datetime | None = None) -> ModelHistory:
    """The newest changes of `model`'s aliases and, with `at`, the versions production and
    staging pointed at then (`NotFoundError` for a model that does not exist)."""
    from mlops.lifecycle.registry import get_model

    changes = history(settings, model)
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
