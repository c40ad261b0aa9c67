"""An index on payout_events by created_at: the outbox relay's sweep of stalled webhook
deliveries (processor_service/stalled_deliveries.py) looks, every round, for the events of the
last day that no delivery row was made for (their message dead-lettered before any webhook batch
took it).

Revision ID: 0020
Revises: 0019
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_events_created", "payout_events", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_events_created", table_name="payout_events")
