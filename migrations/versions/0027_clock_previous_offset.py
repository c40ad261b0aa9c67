"""sandbox_clocks.previous_offset_seconds: the offset before the clock's last advance. `payouts
reconcile` reports what came due on a merchant's clock and was not run for its threshold; what
the last advance made due counts from the advance, and what was due on the clock as it was
before it counts from its own due time: without the offset before the advance, a merchant who
advanced again hid everything already late on its clock.

Revision ID: 0027
Revises: 0026
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sandbox_clocks",
        sa.Column("previous_offset_seconds", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("sandbox_clocks", "previous_offset_seconds")
