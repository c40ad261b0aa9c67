"""ledger_audits.as_of: when the kept audit's snapshot began (the database's clock). An audit
that began before another and finished after it overwrote the newer result with its older
snapshot (a relay's 16 s audit against a `payouts reconcile` run meanwhile); now an audit is
kept only if no audit of a later snapshot is.

Revision ID: 0033
Revises: 0032
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0033"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ledger_audits", sa.Column("as_of", mysql.DATETIME(fsp=6), nullable=True))


def downgrade() -> None:
    op.drop_column("ledger_audits", "as_of")
