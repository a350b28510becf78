"""Users, tokens, approvals and the ledger on PostgreSQL, the production profile's metadata
database: the row locks that count approvals from several processes, the lock that keeps
the last admin, and the token lookups, against a database of their own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tests.support.approvals import approve_together, at_once
from tests.support.postgres import postgres_databases

from mlops import users
from mlops.db import Deployment, engine_for, session_scope, utcnow
from mlops.errors import AuthError, ConflictError
from mlops.lifecycle import deployments
from mlops.reaper import reap_interrupted
from mlops.roles import Role
from mlops.settings import Settings

pytestmark = [pytest.mark.production, pytest.mark.slow]


@pytest.fixture()
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings whose metadata database is a fresh PostgreSQL database (only that store is
    used here: approvals, users and tokens live in it)."""
    with postgres_databases(f"mlops_team_{uuid.uuid4().hex[:10]}") as (url,):
        settings = Settings(home=tmp_path / "home", metadata_db_url=url, api_token="pg-token")
        settings.ensure_dirs()
        yield settings
        engine_for(url).dispose()


def _awaiting(settings: Settings, required: int, hours: float = 72) -> str:
    """A deployment record as the deploy flow leaves it after staging, awaiting approval."""
    row = Deployment(
        id=uuid.uuid4().hex,
        model_name=f"m-{uuid.uuid4().hex[:6]}",
        version="3",
        target_stage="production",
        kind="deploy",
        status=deployments.AWAITING,
        requested_by="ana",
        reason="release",
        owner="",
        active_model=None,
        approvals_required=required,
        approval_expires_at=utcnow() + timedelta(hours=hours),
        stages=[
            {"name": "validate", "status": "passed"},
            {"name": "staging", "status": "passed"},
            {"name": "production", "status": "pending"},
        ],
    )
    row.active_model = row.model_name
    with session_scope(settings.metadata_url) as session:
        session.add(row)
    return row.id


def test_approvals_from_four_processes_count_exactly_n_on_postgres(settings: Settings) -> None:
    deployment_id = _awaiting(settings, 2)
    outcomes = at_once(approve_together, settings, deployment_id, ("bea", "cy", "dan", "eve"))
    assert sorted(outcomes.values()) == ["approved", "conflict", "conflict", "ready"], outcomes
    record = deployments.get_deployment(settings, deployment_id)
    assert record.status == "pending" and record.approvals_given == 2


def test_expiry_and_rejection_on_postgres(settings: Settings) -> None:
    from mlops.roles import Principal

    expired = _awaiting(settings, 1, hours=-1)
    assert reap_interrupted(settings) == 1
    assert deployments.get_deployment(settings, expired).status == "rejected"
    rejected = _awaiting(settings, 1)
    info, ready = deployments.decide(
        settings, rejected, Principal("bea", Role.APPROVER), "reject", "not now"
    )
    assert (info.status, ready, info.error) == ("rejected", False, "Rejected by bea: not now")


def test_users_tokens_and_the_last_admin_on_postgres(settings: Settings) -> None:
    users.add_user(settings, "root", Role.ADMIN, by="test")
    users.add_user(settings, "rita", Role.RESEARCHER, by="test")
    token = users.create_token(settings, "rita", "laptop", expires_in_days=1)
    assert users.resolve(settings, token.token).name == "rita"
    users.revoke_token(settings, token.id)
    users.forget_cached()
    with pytest.raises(AuthError, match="was revoked"):
        users.resolve(settings, token.token)
    admin = users.resolve(settings, settings.token)  # the bootstrap admin, recorded on use
    assert admin.role is Role.ADMIN
    users.set_role(settings, "root", Role.VIEWER)
    with pytest.raises(ConflictError, match="last enabled admin"):
        users.set_role(settings, "admin", Role.VIEWER)
