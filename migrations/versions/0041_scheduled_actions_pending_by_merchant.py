"""The merchants with actions still to apply, each with its earliest due time, read from an index
alone by a loose scan (one index dive per such merchant): the scheduler's poll for actions due on
advanced sandbox clocks read every clock ever advanced, and probed each one's actions, four times
a second (scale review: 20,202 rows a poll at 10,000 clocks, with nothing scheduled).

Revision ID: 0041
Revises: 0040
"""

from collections.abc import Sequence

from migrations.resumable import create_index_unless_present, drop_index_if_present

revision: str = "0041"
down_revision: str | None = "0040"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index_unless_present(
        "ix_scheduled_actions_pending_merchant",
        "scheduled_actions",
        ["applied_at", "merchant_id", "due_at"],
    )


def downgrade() -> None:
    drop_index_if_present("ix_scheduled_actions_pending_merchant", "scheduled_actions")
