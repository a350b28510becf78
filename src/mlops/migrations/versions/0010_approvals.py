"""Approvals of production changes: a deployment may wait for N approvers before
production moves (`approvals` in config/gates.yaml), and each approver's decision is kept
(`mlops.approvals`). Existing deployments need no approval (`approvals_required` 0).

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


def downgrade() -> None:
    op.drop_table("approvals")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("approval_expires_at")
        batch.drop_column("approvals_required")
