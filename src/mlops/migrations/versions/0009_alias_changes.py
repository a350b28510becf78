"""The ledger of production and staging changes: every move of a model's alias the
platform makes, append-only (`lifecycle/ledger.py`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alias_changes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_name", sa.String(250), nullable=False, index=True),
        sa.Column("alias", sa.String(20), nullable=False),
        sa.Column("from_version", sa.String(20), nullable=True),
        sa.Column("to_version", sa.String(20), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("deployment_id", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("alias_changes")
