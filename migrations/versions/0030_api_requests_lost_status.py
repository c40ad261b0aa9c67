"""api_requests.lost_status: the status the API answered before an injected
`timeout-after-commit` replaced it with 504. The readiness report took every such call as a write
that committed, and a retry of a refused request (a 400 the client saw as a 504: nothing was
written) passed "retried with the same idempotency key".

Revision ID: 0030
Revises: 0029
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_requests", sa.Column("lost_status", sa.SmallInteger, nullable=True))


def downgrade() -> None:
    op.drop_column("api_requests", "lost_status")
