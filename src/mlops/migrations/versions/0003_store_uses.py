"""The stores of other systems the platform has used (MLflow's tracking database), so a
used store that goes missing is refused instead of silently recreated empty.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_uses",
        sa.Column("uri", sa.String(length=1000), nullable=False),
        sa.Column("store", sa.String(length=100), nullable=False),
        sa.Column("experiments", sa.Integer(), nullable=False),
        sa.Column("first_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("uri"),
    )


def downgrade() -> None:
    op.drop_table("store_uses")
