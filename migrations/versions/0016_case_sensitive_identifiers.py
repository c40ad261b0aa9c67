"""Identifiers the caller chooses compare case-sensitively: utf8mb4_bin instead of the table's
default collation (utf8mb4_general_ci on MariaDB, utf8mb4_0900_ai_ci on MySQL 8), under which
"CASE-x" and "case-x" were one key.

- payouts.merchant_reference: unique per merchant (uq_payouts_merchant_reference), filtered by
  `GET /payouts?merchantReference=`; a case variant was refused 409 DUPLICATE_REFERENCE, and a
  batch, whose own duplicate check is case-sensitive, failed as a whole on the unique key.
- psp_callbacks.event_id: the IPN's dedup key; another event differing only in case was answered
  duplicate and never applied.
- psp_callbacks.psp_reference: compared with an IPN's pspReference to spot an earlier attempt's.

Type, length, nullability and indexes stay as they were: MODIFY keeps the column's keys.
idempotency_keys.key is not changed: it holds the key's canonical (lower-case) UUID form.

Downgrade: a MODIFY without a collation takes the table's default again. It fails with a
duplicate-key error if references or event ids that differ only in case exist by then.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXACT = "utf8mb4_bin"
# (table, column, length, nullable)
COLUMNS = (
    ("payouts", "merchant_reference", 64, False),
    ("psp_callbacks", "event_id", 100, False),
    ("psp_callbacks", "psp_reference", 64, True),
)


def upgrade() -> None:
    for table, column, length, nullable in COLUMNS:
        op.alter_column(
            table,
            column,
            type_=sa.String(length, collation=EXACT),
            existing_type=sa.String(length),
            existing_nullable=nullable,
        )


def downgrade() -> None:
    for table, column, length, nullable in COLUMNS:
        op.alter_column(
            table,
            column,
            type_=sa.String(length),
            existing_type=sa.String(length, collation=EXACT),
            existing_nullable=nullable,
        )
