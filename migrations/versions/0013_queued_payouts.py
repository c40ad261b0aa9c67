"""Queued payouts (queue when short): the index the expiry's claim reads.

A QUEUED payout is an ordinary row of `payouts` (status QUEUED, nothing held). The merchant's
queue is read through `ix_payouts_merchant_status_created` (merchant, status, created_at; InnoDB
appends the primary key, so `ORDER BY created_at, id` is index order). The relay's expiry looks
across merchants for the oldest QUEUED rows: `status = 'QUEUED' AND created_at < :cutoff ORDER BY
created_at`, a range on this index.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_payouts_status_created", "payouts", ["status", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_payouts_status_created", table_name="payouts")
