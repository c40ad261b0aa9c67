"""ix_payouts_psp_reference, ix_psp_callbacks_psp_reference: an IPN whose pspReference names
another payout (its current reference, or one the PSP named in an outcome accepted for it) is
refused (409 PSP_REFERENCE_OF_ANOTHER_PAYOUT), and finding that payout must not scan a table.

Revision ID: 0025
Revises: 0024
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_payouts_psp_reference", "payouts", ["psp_reference"])
    op.create_index("ix_psp_callbacks_psp_reference", "psp_callbacks", ["psp_reference"])


def downgrade() -> None:
    op.drop_index("ix_psp_callbacks_psp_reference", table_name="psp_callbacks")
    op.drop_index("ix_payouts_psp_reference", table_name="payouts")
