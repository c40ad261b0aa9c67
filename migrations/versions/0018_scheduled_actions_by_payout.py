"""An index on scheduled_actions by payout and attempt (hold cycle): the outbox relay's sweep of
payouts stalled in RETRY (processor_service/stalled_payouts.py) asks, per payout, whether its
attempt has scheduled steps (a scripted scenario), which waits for the sandbox clock instead of a
message.

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_scheduled_actions_payout", "scheduled_actions", ["payout_id", "hold_cycle"])


def downgrade() -> None:
    op.drop_index("ix_scheduled_actions_payout", table_name="scheduled_actions")
