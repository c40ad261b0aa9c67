"""The readiness report's webhook answers of a run: the merchant's deliveries made since its
start, each with its status, from the index alone. ix_deliveries_merchant_created (merchant_id,
created_at) gains status: made anew beside the old one, which then goes (the foreign key on
merchant_id leans on another index of the merchant's throughout).

Revision ID: 0040
Revises: 0039
"""

from collections.abc import Sequence

from migrations.resumable import create_index_unless_present, drop_index_if_present

revision: str = "0040"
down_revision: str | None = "0039"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Each step skipped when done: a run stopped between them is run again.
    create_index_unless_present(
        "ix_deliveries_merchant_created_status",
        "webhook_deliveries",
        ["merchant_id", "created_at", "status"],
    )
    drop_index_if_present("ix_deliveries_merchant_created", "webhook_deliveries")


def downgrade() -> None:
    create_index_unless_present(
        "ix_deliveries_merchant_created", "webhook_deliveries", ["merchant_id", "created_at"]
    )
    drop_index_if_present("ix_deliveries_merchant_created_status", "webhook_deliveries")
