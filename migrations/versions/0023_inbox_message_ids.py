"""processed_messages.message_id holds a message id as AMQP allows it: up to 255 characters, and
compared byte for byte. At 100 characters a longer id (a command published by hand) failed its
insert (DataError) and the valid command was dead-lettered; under the table's default collation
(utf8mb4_general_ci on MariaDB) a second command whose id differed only in case was dropped as a
duplicate of the first.

Downgrade: back to 100 characters and the table's default collation; it fails if longer ids, or
ids that differ only in case, exist by then.

Revision ID: 0023
Revises: 0022
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXACT = "utf8mb4_bin"


def upgrade() -> None:
    op.alter_column(
        "processed_messages",
        "message_id",
        type_=sa.String(255, collation=EXACT),
        existing_type=sa.String(100),
        existing_nullable=False,
    )


def downgrade() -> None:
    op.alter_column(
        "processed_messages",
        "message_id",
        type_=sa.String(100),
        existing_type=sa.String(255, collation=EXACT),
        existing_nullable=False,
    )
