"""PSP callbacks bound to the hold cycle and applied in order

- psp_callbacks.hold_cycle: the attempt an outcome belongs to; accept_seq: the order the API
  accepted outcomes in (the database's counter, not a host's clock); applied_at: NULL until the
  processor has applied it. Existing rows were handled under the old rules: marked applied.
- payouts.accepted_outcome: the newest PSP outcome accepted but not yet applied, against which
  the next callback is judged (NULL when there is none).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The index the server made for psp_callbacks' payout_id foreign key in 0001 (named after the
# column), which it dropped by itself when this revision's (payout_id, accept_seq) came.
FOREIGN_KEY_INDEX = "payout_id"


def upgrade() -> None:
    op.add_column("payouts", sa.Column("accepted_outcome", sa.String(20), nullable=True))
    # An AUTO_INCREMENT column must be a key in the statement that adds it.
    op.execute(
        "ALTER TABLE psp_callbacks"
        " ADD COLUMN hold_cycle INT NOT NULL DEFAULT 1,"
        " ADD COLUMN accept_seq BIGINT NOT NULL AUTO_INCREMENT,"
        " ADD COLUMN applied_at DATETIME(6) NULL,"
        " ADD UNIQUE KEY uq_psp_callbacks_accept_seq (accept_seq),"
        " ADD INDEX ix_psp_callbacks_payout_seq (payout_id, accept_seq)"
    )
    op.execute(
        "UPDATE psp_callbacks c JOIN payouts p ON p.id = c.payout_id"
        " SET c.hold_cycle = p.hold_cycle, c.applied_at = c.received_at"
    )
    # The downgrade gives the payout_id foreign key an index of its own; the new one serves it
    # again now (the implicit index of a fresh schema went by itself when the new one came).
    indexes = {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("psp_callbacks")}
    if FOREIGN_KEY_INDEX in indexes:
        op.drop_index(FOREIGN_KEY_INDEX, table_name="psp_callbacks")


def downgrade() -> None:
    # The payout_id foreign key leans on the new index since its own was dropped for it: the
    # index it had, under the name the server gave it.
    op.create_index(FOREIGN_KEY_INDEX, "psp_callbacks", ["payout_id"])
    op.execute(
        "ALTER TABLE psp_callbacks"
        " DROP INDEX ix_psp_callbacks_payout_seq,"
        " DROP INDEX uq_psp_callbacks_accept_seq,"
        " DROP COLUMN applied_at,"
        " DROP COLUMN accept_seq,"
        " DROP COLUMN hold_cycle"
    )
    op.drop_column("payouts", "accepted_outcome")
