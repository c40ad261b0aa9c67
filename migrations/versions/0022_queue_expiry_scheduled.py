"""A queued payout's expiry is a scheduled action (EXPIRE_QUEUE), due in its merchant's sandbox
time: advancing the clock expires queued payouts, as it expires undecided ones. The relay's
housekeeping compared `created_at` with the real clock. Each payout QUEUED now gets its action,
due PAYOUTS_QUEUED_EXPIRY_HOURS of its merchant's sandbox time after it was created. The index that
housekeeping read (`ix_payouts_status_created`, 0013) has no reader left and is dropped: one
index fewer to maintain at each change of a payout's status.

Revision ID: 0022
Revises: 0021
"""

from collections.abc import Sequence

from alembic import op

from contracts.settings import get_settings

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Due PAYOUTS_QUEUED_EXPIRY_HOURS of sandbox time after the payout was queued: its creation
    # plus the merchant's clock offset now (the offset it was queued under is not recorded; a
    # clock only moves forward, so the expiry is never earlier than it would have been).
    expiry_seconds = int(get_settings().queued_expiry.total_seconds())
    op.execute(
        "INSERT INTO scheduled_actions"
        " (merchant_id, payout_id, hold_cycle, action, step, expected_status, due_at, created_at)"
        " SELECT p.merchant_id, p.id, p.hold_cycle, 'EXPIRE_QUEUE', NULL, 'QUEUED',"
        " TIMESTAMPADD(SECOND, COALESCE(c.offset_seconds, 0) + "
        f"{expiry_seconds}, p.created_at), UTC_TIMESTAMP(6)"
        " FROM payouts p LEFT JOIN sandbox_clocks c ON c.merchant_id = p.merchant_id"
        " WHERE p.status = 'QUEUED'"
    )
    op.drop_index("ix_payouts_status_created", table_name="payouts")


def downgrade() -> None:
    # The relay's housekeeping of the revision before expires queued payouts by `created_at`.
    op.create_index("ix_payouts_status_created", "payouts", ["status", "created_at"], unique=False)
    op.execute("DELETE FROM scheduled_actions WHERE action = 'EXPIRE_QUEUE'")
