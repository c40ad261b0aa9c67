"""outbox rows back off per row and park after too many attempts; inbox cleanup index

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A SMALLINT overflowed after ~27 minutes of retries every poll, and its error rolled back
    # the whole batch. The relay now caps the count, and INT leaves room for any cap.
    op.alter_column(
        "outbox",
        "publish_attempts",
        existing_type=sa.SmallInteger(),
        type_=sa.Integer(),
        existing_nullable=False,
    )
    # Existing rows (and every row written without it) are due at once.
    op.add_column(
        "outbox",
        sa.Column(
            "next_attempt_at",
            mysql.DATETIME(fsp=6),
            server_default="1970-01-01 00:00:00",
            nullable=False,
        ),
    )
    op.add_column("outbox", sa.Column("parked_at", mysql.DATETIME(fsp=6), nullable=True))
    # The claim (unsent, unparked, due, ORDER BY next_attempt_at, id) reads this index in order
    # and stops at the batch size, so FOR UPDATE SKIP LOCKED locks only the rows it returns.
    op.drop_index("ix_outbox_claim", table_name="outbox")
    op.create_index("ix_outbox_claim", "outbox", ["sent_at", "parked_at", "next_attempt_at", "id"])
    # Without it each housekeeping batch scanned the whole inbox.
    op.create_index("ix_processed_messages_processed_at", "processed_messages", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_messages_processed_at", table_name="processed_messages")
    op.drop_index("ix_outbox_claim", table_name="outbox")
    op.create_index("ix_outbox_claim", "outbox", ["sent_at", "publish_attempts", "id"])
    op.drop_column("outbox", "parked_at")
    op.drop_column("outbox", "next_attempt_at")
    op.alter_column(
        "outbox",
        "publish_attempts",
        existing_type=sa.Integer(),
        type_=sa.SmallInteger(),
        existing_nullable=False,
    )
