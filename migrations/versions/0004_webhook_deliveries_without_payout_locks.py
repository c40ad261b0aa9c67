"""webhook deliveries no longer reference payouts and merchants by foreign key

Inserting a delivery took a shared lock on its payout row (the foreign-key check), so the
webhook service waited behind the processor's FOR UPDATE on hot payouts. The delivery still
references its event (payout_events), which carries the payout and merchant ids.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# MySQL and MariaDB both name unnamed foreign keys <table>_ibfk_<n>, in creation order.
MERCHANT_FOREIGN_KEY = "webhook_deliveries_ibfk_2"
PAYOUT_FOREIGN_KEY = "webhook_deliveries_ibfk_3"


def upgrade() -> None:
    op.drop_constraint(PAYOUT_FOREIGN_KEY, "webhook_deliveries", type_="foreignkey")
    op.drop_constraint(MERCHANT_FOREIGN_KEY, "webhook_deliveries", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(
        MERCHANT_FOREIGN_KEY, "webhook_deliveries", "merchants", ["merchant_id"], ["id"]
    )
    op.create_foreign_key(
        PAYOUT_FOREIGN_KEY, "webhook_deliveries", "payouts", ["payout_id"], ["id"]
    )
