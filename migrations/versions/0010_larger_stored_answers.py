"""idempotency_keys.response_body holds a payroll batch's answer (up to 1,000 payouts, about
half a megabyte): MEDIUMBLOB instead of BLOB (64 KiB)

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column(
        "idempotency_keys", "response_body", type_=mysql.MEDIUMBLOB(), existing_nullable=True
    )


def downgrade() -> None:
    op.alter_column("idempotency_keys", "response_body", type_=mysql.BLOB(), existing_nullable=True)
