"""Webhook retries whose message was lost are sent again (processor_service/stalled_retries.py):
a RETRYING delivery records the due time a copy of its waiting message was last sent for, by the
outbox relay or by a sandbox clock advance, and when (the database's clock), so that a due time is
copied once, and again only if that copy has not moved the delivery on for a long while.

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
    for column in ("copied_due_at", "copied_at"):
        op.add_column("webhook_deliveries", sa.Column(column, mysql.DATETIME(fsp=6), nullable=True))


def downgrade() -> None:
    for column in ("copied_at", "copied_due_at"):
        op.drop_column("webhook_deliveries", column)
