"""webhook deliveries are leased for an attempt instead of locked across it

The webhook service held the delivery row's lock (and a transaction and a pooled connection)
for the whole HTTP call. Now it leases the row (a token and an expiry on the database's clock),
calls without any transaction open, then records the attempt where it still holds the lease. A
consumer that dies mid-attempt leaves a lease that expires, and its message comes back.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "webhook_deliveries"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("lease_token", sa.String(length=32), nullable=True))
    op.add_column(TABLE, sa.Column("leased_until", mysql.DATETIME(fsp=6), nullable=True))


def downgrade() -> None:
    op.drop_column(TABLE, "leased_until")
    op.drop_column(TABLE, "lease_token")
