"""merchants.secret_rotated_at: when the webhook secret last rotated. The payout page shows each
webhook attempt's signature headers, rebuilt from the secrets that signed then; it placed the
rotation at `previous_secret_expires_at` minus the default grace, so after a rotation with
another grace (`previousSecretGraceHours: 0`, a leaked secret retired at once) an attempt
signed before it was shown signed with the new secret too. A merchant that rotated before this
revision gets that estimate (with the configured default grace).

Revision ID: 0024
Revises: 0023
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from contracts.settings import get_settings

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "merchants",
        sa.Column("secret_rotated_at", mysql.DATETIME(fsp=6), nullable=True),
    )
    grace_hours = int(get_settings().webhook_secret_grace_hours)
    op.execute(
        "UPDATE merchants SET secret_rotated_at ="
        f" previous_secret_expires_at - INTERVAL {grace_hours} HOUR"
        " WHERE previous_secret_expires_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_column("merchants", "secret_rotated_at")
