"""outbox claim index covers the relay's ORDER BY publish_attempts, id

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Without publish_attempts in the index the claim filesorts, and FOR UPDATE then locks every
    # unsent row: a second relay finds nothing to claim.
    op.create_index("ix_outbox_claim", "outbox", ["sent_at", "publish_attempts", "id"])
    op.drop_index("ix_outbox_unsent", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_unsent", "outbox", ["sent_at", "id"])
    op.drop_index("ix_outbox_claim", table_name="outbox")
