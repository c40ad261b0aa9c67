"""Sandbox chaos (issue 13): merchant-wide injected faults, webhook chaos settings, the chaos
label of a webhook attempt, and the request log.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = mysql.DATETIME(fsp=6)


def upgrade() -> None:
    op.add_column("webhook_attempts", sa.Column("chaos", sa.String(40), nullable=True))
    op.create_table(
        "sandbox_fault_settings",
        sa.Column("merchant_id", sa.String(36), sa.ForeignKey("merchants.id"), primary_key=True),
        sa.Column("fault", sa.String(40), nullable=False),
        sa.Column("percent", sa.SmallInteger, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "webhook_chaos_settings",
        sa.Column("merchant_id", sa.String(36), sa.ForeignKey("merchants.id"), primary_key=True),
        sa.Column("duplicate_percent", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("out_of_order", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("delay_seconds", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("stale_timestamp_percent", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("old_secret_only", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("fail_first_attempts", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "api_requests",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("merchant_id", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=True),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(100), nullable=True),
        sa.Column("replayed", sa.Boolean, nullable=False),
        sa.Column("fault", sa.String(40), nullable=True),
        sa.Column("retry_after_seconds", sa.Integer, nullable=True),
        sa.Column("request_body", sa.Text, nullable=True),
        sa.Column("response_body", sa.Text, nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_api_requests_merchant", "api_requests", ["merchant_id", "id"])
    op.create_index("ix_api_requests_started_at", "api_requests", ["started_at"])


def downgrade() -> None:
    op.drop_table("api_requests")
    op.drop_table("webhook_chaos_settings")
    op.drop_table("sandbox_fault_settings")
    op.drop_column("webhook_attempts", "chaos")
