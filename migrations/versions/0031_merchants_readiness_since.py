"""merchants.readiness_since: where the merchant's go-live readiness report starts counting
(`POST /api/v1/sandbox/readiness/restart`). The report counted everything ever done: a webhook
receiver that once accepted a stale delivery, or one retry sent too early, kept its item failed
for good, however the integration was fixed since.

Revision ID: 0031
Revises: 0030
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "merchants",
        sa.Column("readiness_since", mysql.DATETIME(fsp=6), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("merchants", "readiness_since")
