"""payouts.in_bulk: the payout was started several at once (a payroll's chunk, a top-up releasing
queued payouts). Its commands and events go through the bulk queues for the rest of its life:
decided per message, a retried payroll payout's `payout.succeeded` overtook its own
`payout.created`, still in the payroll's backlog (diff review).

Revision ID: 0034
Revises: 0033
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0034"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "payouts",
        sa.Column("in_bulk", sa.Boolean, nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    op.drop_column("payouts", "in_bulk")
