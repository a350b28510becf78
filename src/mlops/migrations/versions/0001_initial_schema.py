"""The schema as it was when the metadata store moved to Alembic.

Every table and index is created only if missing: a state folder made before Alembic
(by `create_all`) upgrades through here without losing a row.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("feature_versions", sa.JSON(), nullable=False),
        sa.Column("tickers", sa.JSON(), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("label", sa.Boolean(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        if_not_exists=True,
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model_name", sa.String(length=250), nullable=False),
        sa.Column("version", sa.String(length=20), nullable=False),
        sa.Column("target_stage", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("stages", sa.JSON(), nullable=False),
        sa.Column("previous_production", sa.String(length=20), nullable=True),
        sa.Column("failed_stage", sa.String(length=20), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("active_model", sa.String(length=250), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("active_model"),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_deployments_model_name"),
        "deployments",
        ["model_name"],
        unique=False,
        if_not_exists=True,
    )

    op.create_table(
        "evaluation_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("evaluation_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("model_name", sa.String(length=250), nullable=False),
        sa.Column("version", sa.String(length=20), nullable=False),
        sa.Column("suite", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("evaluation_id", "kind", "model_name", "version", "suite"),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_evaluation_results_evaluation_id"),
        "evaluation_results",
        ["evaluation_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_evaluation_results_suite"),
        "evaluation_results",
        ["suite"],
        unique=False,
        if_not_exists=True,
    )

    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("suites", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("explain", sa.Boolean(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("plots", sa.Text(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_evaluations_status"), "evaluations", ["status"], unique=False, if_not_exists=True
    )

    op.create_table(
        "feature_statistics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("view_name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("feature_name", sa.String(length=200), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("samples", sa.JSON(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("view_name", "version", "feature_name"),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_feature_statistics_feature_name"),
        "feature_statistics",
        ["feature_name"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_feature_statistics_view_name"),
        "feature_statistics",
        ["view_name"],
        unique=False,
        if_not_exists=True,
    )

    op.create_table(
        "feature_view_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("view_name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=20), nullable=False),
        sa.Column("change_kind", sa.String(length=20), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("feast_version", sa.String(length=20), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("view_name", "version"),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_feature_view_versions_view_name"),
        "feature_view_versions",
        ["view_name"],
        unique=False,
        if_not_exists=True,
    )

    op.create_table(
        "ingest_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("report_path", sa.Text(), nullable=True),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("wall_seconds", sa.Float(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_table(
        "prompt_usage_counts",
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("template"),
        if_not_exists=True,
    )
    op.create_table(
        "prompt_usage_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("error_kind", sa.String(length=40), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("caller", sa.String(length=200), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=True),
        sa.Column("outcome_detail", sa.Text(), nullable=True),
        sa.Column("outcome_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_prompt_usage_failures",
        "prompt_usage_events",
        ["template", "at_ms", "error_kind"],
        unique=False,
        sqlite_where=sa.text("status = 'failure'"),
        postgresql_where=sa.text("status = 'failure'"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_prompt_usage_latency",
        "prompt_usage_events",
        ["template", "latency_ms", "at_ms"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        "ix_prompt_usage_outcomes",
        "prompt_usage_events",
        ["template", "at_ms", "outcome"],
        unique=False,
        sqlite_where=sa.text("outcome IS NOT NULL"),
        postgresql_where=sa.text("outcome IS NOT NULL"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_prompt_usage_template_at",
        "prompt_usage_events",
        ["template", "at_ms", "version", "status", "latency_ms", "error_kind", "outcome"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        "ix_prompt_usage_version_latency",
        "prompt_usage_events",
        ["template", "version", "latency_ms", "at_ms"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    for table in [
        "prompt_usage_events",
        "prompt_usage_counts",
        "ingest_runs",
        "feature_view_versions",
        "feature_statistics",
        "evaluations",
        "evaluation_results",
        "deployments",
        "datasets",
    ]:
        op.drop_table(table)
