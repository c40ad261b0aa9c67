"""An index of a merchant's payout events by type: the go-live readiness report counts them
(reinitiations, reversals delivered), and without it read every event of the merchant (200 ms
for a merchant with 60,000 events).

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_events_merchant_type", "payout_events", ["merchant_id", "type"])


def downgrade() -> None:
    op.drop_index("ix_events_merchant_type", table_name="payout_events")
