"""Approvals of production changes: a deployment may wait for N approvers before
production moves, and a prompt publication before its version goes live (`approvals` in
config/gates.yaml); each approver's decision is kept (`mlops.approvals`). Existing
deployments need no approval (`approvals_required` 0). The ledger's changes get a `kind`:
the platform's own moves (every existing row), moves seen made outside the platform, and
their acknowledgements.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(
            sa.Column("approvals_required", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("approval_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("alias_changes") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(20), nullable=False, server_default="platform")
        )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subject_kind", sa.String(20), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("approver", sa.String(200), nullable=False),
        sa.Column("decision", sa.String(10), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("subject_kind", "subject_id", "approver"),
    )
    op.create_table(
        "publication_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("template", sa.String(200), nullable=False, index=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("approvals_required", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("sha", sa.String(64), nullable=True),
        sa.Column("publishing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active_template", sa.String(200), nullable=True, unique=True),
    )


def downgrade() -> None:
    op.drop_table("publication_requests")
    op.drop_table("approvals")
    with op.batch_alter_table("alias_changes") as batch:
        batch.drop_column("kind")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("approval_expires_at")
        batch.drop_column("approvals_required")
