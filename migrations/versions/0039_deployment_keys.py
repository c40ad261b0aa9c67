"""deployment_keys: a secret of this deployment, made here once: `public-ids` keys the ids
merchants see of counters every merchant shares (contracts.public_ids), whose gaps counted
what other merchants did.

Revision ID: 0039
Revises: 0038
"""

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0039"
down_revision: str | None = "0038"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    keys = op.create_table(
        "deployment_keys",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("value", sa.LargeBinary(64), nullable=False),
    )
    op.bulk_insert(keys, [{"name": "public-ids", "value": os.urandom(32)}])


def downgrade() -> None:
    op.drop_table("deployment_keys")
