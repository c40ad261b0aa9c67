"""Webhook retries on the sandbox clock (issue "time and scripts"): a retrying delivery records
the retry count its waiting message carries, so that advancing the merchant's clock can send an
exact copy of that message to the work queue at once; and an index finds a merchant's retries due
by its sandbox time.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("webhook_deliveries", sa.Column("retry_count", sa.Integer, nullable=True))
    op.create_index(
        "ix_deliveries_retry_due",
        "webhook_deliveries",
        ["merchant_id", "status", "next_attempt_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_retry_due", table_name="webhook_deliveries")
    op.drop_column("webhook_deliveries", "retry_count")
