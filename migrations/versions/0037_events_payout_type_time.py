"""Whether a payout's scenario ran before its last reinitiation (the readiness report): the
moment of each of its events of a type, from the index alone. ix_events_payout_type (payout_id,
type) gains created_at: made anew beside the old one, which then goes (the foreign key on
payout_id leans on one of them throughout).

Revision ID: 0037
Revises: 0036
"""

from collections.abc import Sequence

from migrations.resumable import create_index_unless_present, drop_index_if_present

revision: str = "0037"
down_revision: str | None = "0036"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Each step skipped when done: a run stopped between them is run again.
    create_index_unless_present(
        "ix_events_payout_type_time", "payout_events", ["payout_id", "type", "created_at"]
    )
    drop_index_if_present("ix_events_payout_type", "payout_events")


def downgrade() -> None:
    create_index_unless_present("ix_events_payout_type", "payout_events", ["payout_id", "type"])
    drop_index_if_present("ix_events_payout_type_time", "payout_events")
