"""api_requests.request_digest: a request's body fingerprint as idempotency takes it (SHA-256 of
its canonical JSON), before masking. The readiness report finds a call's retry as the next call
of the same request; by the masked body, two requests to accounts ending in the same four digits
(one scenario suffix) were one.

Revision ID: 0021
Revises: 0020
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_requests", sa.Column("request_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("api_requests", "request_digest")
