"""Sandbox clock (issue "time and scripts"): each merchant's clock offset, and the actions due at
a sandbox time (scripted scenarios' next steps, decision-window expiries) the processor claims.

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = mysql.DATETIME(fsp=6)


def upgrade() -> None:
    op.create_table(
        "sandbox_clocks",
        sa.Column("merchant_id", sa.String(36), sa.ForeignKey("merchants.id"), primary_key=True),
        sa.Column("offset_seconds", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "scheduled_actions",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("merchant_id", sa.String(36), nullable=False),
        sa.Column("payout_id", sa.String(36), nullable=False),
        sa.Column("hold_cycle", sa.Integer, nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("step", sa.SmallInteger, nullable=True),
        sa.Column("expected_status", sa.String(20), nullable=False),
        sa.Column("due_at", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("applied_at", TIMESTAMP, nullable=True),
        sa.Column("result", sa.String(20), nullable=True),
        sa.Column("status_after", sa.String(20), nullable=True),
    )
    op.create_index("ix_scheduled_actions_claim", "scheduled_actions", ["applied_at", "due_at"])
    op.create_index(
        "ix_scheduled_actions_merchant",
        "scheduled_actions",
        ["merchant_id", "applied_at", "due_at"],
    )


def downgrade() -> None:
    op.drop_table("scheduled_actions")
    op.drop_table("sandbox_clocks")
