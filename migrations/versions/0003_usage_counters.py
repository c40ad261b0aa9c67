"""usage counters: per-merchant request rate and daily idempotency-key quota

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per (merchant, meter), reused window after window: the table never grows past
    # merchants x meters, so nothing has to clean it up.
    op.create_table(
        "usage_counters",
        sa.Column("merchant_id", sa.String(length=36), nullable=False),
        sa.Column("meter", sa.String(length=32), nullable=False),
        sa.Column("window_index", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
        sa.PrimaryKeyConstraint("merchant_id", "meter"),
    )


def downgrade() -> None:
    op.drop_table("usage_counters")
