"""An index on psp_callbacks by applied_at and received_at: the outbox relay's sweep of stalled
payouts (processor_service/stalled_payouts.py) looks for outcomes accepted long ago and still not
applied (their command lost), every round.

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_psp_callbacks_unapplied", "psp_callbacks", ["applied_at", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_psp_callbacks_unapplied", table_name="psp_callbacks")
