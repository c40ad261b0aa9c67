"""Merchants' webhook secrets sealed at rest (contracts.secrets_at_rest): the two secret columns
widened to hold a sealed value, and every secret stored so far sealed with the first of
PAYOUTS_SECRETS_KEYS. Downgrading opens them again (with the keys that sealed them).

Revision ID: 0036
Revises: 0035
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

from contracts.db.sealed import SEALED_SECRET_LENGTH, keyring

revision: str = "0036"
down_revision: str | None = "0035"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SECRET_COLUMNS = ("webhook_secret", "previous_webhook_secret")
PLAIN_SECRET_LENGTH = 100


def _rewrite_secrets(change: Callable[[str], str]) -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, webhook_secret, previous_webhook_secret FROM merchants")
    )
    for merchant_id, secret, previous in rows.all():
        connection.execute(
            sa.text(
                "UPDATE merchants SET webhook_secret = :secret, previous_webhook_secret = :previous"
                " WHERE id = :id"
            ),
            {
                "id": merchant_id,
                "secret": change(secret),
                "previous": None if previous is None else change(previous),
            },
        )


def _resize(length: int, *, from_length: int) -> None:
    for column in SECRET_COLUMNS:
        op.alter_column(
            "merchants",
            column,
            type_=sa.String(length),
            existing_type=sa.String(from_length),
            existing_nullable=column != "webhook_secret",
        )


def upgrade() -> None:
    _resize(SEALED_SECRET_LENGTH, from_length=PLAIN_SECRET_LENGTH)
    # Opened first: a run stopped halfway (MariaDB commits each DDL statement) left some sealed.
    _rewrite_secrets(lambda stored: keyring().seal(keyring().open(stored)))


def downgrade() -> None:
    _rewrite_secrets(keyring().open)
    _resize(PLAIN_SECRET_LENGTH, from_length=SEALED_SECRET_LENGTH)
