"""ix_api_requests_merchant_started: GET /requests lists a merchant's calls newest first by when
each started (by id, the order rows are logged in once a call has answered, a slow call was
listed above the quicker calls that started after it), and the readiness report reads a
merchant's calls since a time; (merchant_id, id) served neither.

Revision ID: 0026
Revises: 0025
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_api_requests_merchant_started", "api_requests", ["merchant_id", "started_at", "id"]
    )
    op.drop_index("ix_api_requests_merchant", table_name="api_requests")


def downgrade() -> None:
    op.create_index("ix_api_requests_merchant", "api_requests", ["merchant_id", "id"])
    op.drop_index("ix_api_requests_merchant_started", table_name="api_requests")
