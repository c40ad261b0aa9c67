"""sandbox_clock_advances: every advance of a merchant's clock, in place of
sandbox_clocks.previous_offset_seconds (migration 0027), which kept only the offset before the
last one. What a clock read at a moment in the past is the offset of the last advance before it:
a payout the processor picked up after two advances started its script at the first one's end,
and reconcile read a clock advanced twice since as the later advance's previous offset.

Revision ID: 0029
Revises: 0028
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = mysql.DATETIME(fsp=6)
LONG_AGO = "1000-01-01 00:00:00"  # before every advance the previous offset was read for


def upgrade() -> None:
    op.create_table(
        "sandbox_clock_advances",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("merchant_id", sa.String(36), nullable=False),
        sa.Column("advanced_at", TIMESTAMP, nullable=False),
        sa.Column("offset_seconds", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_sandbox_clock_advances_merchant",
        "sandbox_clock_advances",
        ["merchant_id", "advanced_at", "id"],
    )
    # What 0027 knew: the offset before the last advance, then the offset since.
    op.execute(
        "INSERT INTO sandbox_clock_advances (merchant_id, advanced_at, offset_seconds) "
        f"SELECT merchant_id, '{LONG_AGO}', previous_offset_seconds FROM sandbox_clocks "
        "WHERE previous_offset_seconds <> 0"
    )
    op.execute(
        "INSERT INTO sandbox_clock_advances (merchant_id, advanced_at, offset_seconds) "
        "SELECT merchant_id, updated_at, offset_seconds FROM sandbox_clocks"
    )
    op.drop_column("sandbox_clocks", "previous_offset_seconds")


def downgrade() -> None:
    op.add_column(
        "sandbox_clocks",
        sa.Column("previous_offset_seconds", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # The advance before the last: two may share a stamp (an advance that waited for another's
    # lock is stamped no earlier than it), so it is the second in their order, not the last
    # before the clock's stamp.
    op.execute(
        "UPDATE sandbox_clocks SET previous_offset_seconds = COALESCE(("
        "SELECT a.offset_seconds FROM sandbox_clock_advances a "
        "WHERE a.merchant_id = sandbox_clocks.merchant_id "
        "ORDER BY a.advanced_at DESC, a.id DESC LIMIT 1 OFFSET 1), 0)"
    )
    op.drop_table("sandbox_clock_advances")
