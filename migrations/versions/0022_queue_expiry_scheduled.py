"""A queued payout's expiry is a scheduled action (EXPIRE_QUEUE), due in its merchant's sandbox
time: advancing the clock expires queued payouts, as it expires undecided ones. The relay's
housekeeping compared `created_at` with the real clock. Each payout QUEUED now gets its action,
due 72 hours (the default PAYOUTS_QUEUED_EXPIRY_HOURS) after it was created. The index that
housekeeping read (`ix_payouts_status_created`, 0013) has no reader left and is dropped: one
index fewer to maintain at each change of a payout's status.

Revision ID: 0022
Revises: 0021
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO scheduled_actions"
        " (merchant_id, payout_id, hold_cycle, action, step, expected_status, due_at, created_at)"
        " SELECT merchant_id, id, hold_cycle, 'EXPIRE_QUEUE', NULL, 'QUEUED',"
        " created_at + INTERVAL 72 HOUR, UTC_TIMESTAMP(6)"
        " FROM payouts WHERE status = 'QUEUED'"
    )
    op.drop_index("ix_payouts_status_created", table_name="payouts")


def downgrade() -> None:
    # The relay's housekeeping of the revision before expires queued payouts by `created_at`.
    op.create_index("ix_payouts_status_created", "payouts", ["status", "created_at"], unique=False)
    op.execute("DELETE FROM scheduled_actions WHERE action = 'EXPIRE_QUEUE'")
