"""ledger_audits: the last audit of the whole ledger (`payouts reconcile`'s ledger checks), one
row. The Operations page ran the audit on every load: at 300,000 payouts one of its statements
took 16 s, past the API's 10 s database timeout, and the page failed every time. Now the outbox
relay audits every 10 minutes (the first relay to claim the row), `payouts reconcile` records its
own, and the page shows the last one and its age.

Revision ID: 0032
Revises: 0031
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    audits = op.create_table(
        "ledger_audits",
        sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("claimed_at", mysql.DATETIME(fsp=6), nullable=True),
        sa.Column("finished_at", mysql.DATETIME(fsp=6), nullable=True),
        sa.Column("took_ms", sa.Integer, nullable=True),
        sa.Column("problem_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("problems", sa.JSON, nullable=True),
    )
    op.bulk_insert(audits, [{"id": 1, "problem_count": 0}])


def downgrade() -> None:
    op.drop_table("ledger_audits")
