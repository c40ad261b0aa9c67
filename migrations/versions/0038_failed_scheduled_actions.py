"""`payouts reconcile` and the Operations page list the scheduled actions that failed (result
ERROR) while their payout still waits for them (an IN_REVIEW payout whose decision window's
expiry failed kept its funds held, and nothing said so): read by this index, not a scan of
every applied action.

Revision ID: 0038
Revises: 0037
"""

from collections.abc import Sequence

from migrations.resumable import create_index_unless_present, drop_index_if_present

revision: str = "0038"
down_revision: str | None = "0037"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index_unless_present(
        "ix_scheduled_actions_result", "scheduled_actions", ["result", "applied_at"]
    )


def downgrade() -> None:
    drop_index_if_present("ix_scheduled_actions_result", "scheduled_actions")
