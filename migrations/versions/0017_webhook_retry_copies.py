"""Webhook retries whose message was lost are sent again (processor_service/stalled_retries.py):
a RETRYING delivery records the due time a copy of its waiting message was last sent for, by the
outbox relay or by a sandbox clock advance, so that each due time is copied at most once.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "webhook_deliveries", sa.Column("copied_due_at", mysql.DATETIME(fsp=6), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("webhook_deliveries", "copied_due_at")
