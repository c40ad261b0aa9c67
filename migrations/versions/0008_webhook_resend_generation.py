"""webhook resends compared by generation, not by clock

A resend stamped the API host's time on its message and the webhook service compared it with
`delivered_at`, written on its own host: with clock skew a resend could be dropped as "already
delivered". Now each resend increments the delivery's `generation` and names it in the message;
a successful attempt records the generation it honoured in `delivered_generation`. Existing rows
start at generation 0, which is what their messages (without the new header) carry.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "webhook_deliveries"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))
    op.add_column(
        TABLE, sa.Column("delivered_generation", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column(TABLE, "delivered_generation")
    op.drop_column(TABLE, "generation")
