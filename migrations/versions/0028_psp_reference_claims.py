"""psp_reference_claims: one row per PSP reference an accepted outcome named, keyed by the
reference. Two callbacks naming one reference for two payouts at once each locked only its own
payout, read no outcome of the other (not committed yet) and were both accepted; claiming the
reference first makes the second wait for the first and then see its outcome.

Revision ID: 0028
Revises: 0027
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "psp_reference_claims",
        sa.Column("psp_reference", sa.String(64, collation="utf8mb4_bin"), primary_key=True),
        sa.Column("payout_id", sa.String(36), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("psp_reference_claims")
