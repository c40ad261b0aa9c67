"""Indexes for the go-live readiness report (api_service/sandbox/readiness.py): each of its
statements reads an index range of the merchant's rows, not every row of its history.

- ix_payouts_readiness (payouts): the scenario counts read the merchant's payouts since the run
  started from the index alone. Through ix_payouts_merchant_created each payout was then read
  by its (random) key: after a restart halfway through the history, slower than all of it.
- ix_events_payout_type (payout_events): whether a payout showed its scenario's own status is
  one probe of the index, not a read of each of its events.
- ix_journals_merchant_kind (ledger_journals): the merchant's reinitiations (HOLD journals of a
  hold cycle after the first) since the run started, with their payouts, not every journal of
  each of its payouts.
- ix_deliveries_merchant_event (webhook_deliveries): the merchant's payout.reversed deliveries
  since the run started, delivered or not, with their payouts, not every delivery of each of
  its REVERSED payouts.
- ix_attempts_delivery_answer (webhook_attempts): how each of the merchant's deliveries' attempts
  since the run started was answered, from the index alone (an attempt has no merchant of its
  own: the report reaches it through the merchant's deliveries).
- ix_api_requests_merchant_fault, ix_api_requests_merchant_status (api_requests): the merchant's
  calls that carry evidence (a timeout-after-commit, a 429), each kind by its own index; one
  condition of both read every call of the merchant.

Measured on a merchant with 150,000 of 170,000 payouts (510,000 events, deliveries and
attempts, 357,000 journals, 340,000 calls; a 128 MB buffer pool), warm, whole history / since a
restart halfway: the report took 9 to 15 s / 25 to 33 s, 8 to 9 s / 4.3 to 4.9 s after (about
2 s of it building the calls in Python). Rows read before -> after: scenario counts 857,000 /
418,000 (2.3 s / 12.6 s) -> 791,000 / 395,000 from indexes alone (2.5 s / 1.5 s); reversals
49,000 (2.7 s) -> 19,000 / 9,700 (0.3 s); reinitiations 615,000 / 306,000 (1.2 s) -> 12,900 /
9,700 (0.1 s); evidence calls 340,000 / 150,000 (0.4 s / 0.5 s) -> 6,000 / 3,000 (0.2 s);
attempts' answers 1.8 million / 1.6 million (5.8 s / 7.0 s) -> the same from indexes alone
(1.3 s / 1.4 s).

Revision ID: 0035
Revises: 0034
"""

from collections.abc import Sequence

from migrations.resumable import create_index_unless_present, drop_index_if_present

revision: str = "0035"
down_revision: str | None = "0034"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES: dict[str, tuple[str, list[str]]] = {
    "ix_payouts_readiness": (
        "payouts",
        [
            "merchant_id",
            "created_at",
            "status",
            "amount",
            "account_number",
            "failure_code",
            "hold_cycle",
        ],
    ),
    "ix_events_payout_type": ("payout_events", ["payout_id", "type"]),
    "ix_journals_merchant_kind": (
        "ledger_journals",
        ["merchant_id", "kind", "hold_cycle", "created_at", "payout_id"],
    ),
    "ix_deliveries_merchant_event": (
        "webhook_deliveries",
        ["merchant_id", "event_type", "created_at", "delivered_at", "payout_id"],
    ),
    "ix_attempts_delivery_answer": (
        "webhook_attempts",
        ["delivery_id", "created_at", "chaos", "status_code", "latency_ms"],
    ),
    "ix_api_requests_merchant_fault": (
        "api_requests",
        ["merchant_id", "fault", "method", "started_at"],
    ),
    "ix_api_requests_merchant_status": ("api_requests", ["merchant_id", "status", "started_at"]),
}
# The indexes the server made for foreign keys in 0001 (named after the column), which it drops
# by itself when a new index starts with their column (as in 0007): the new one serves the key.
FOREIGN_KEY_INDEXES = {"payout_events": "payout_id", "ledger_journals": "merchant_id"}


def upgrade() -> None:
    # Each step skipped when done: a run stopped among them is run again (migrations.resumable).
    for name, (table, columns) in INDEXES.items():
        create_index_unless_present(name, table, columns)
    # The downgrade gives those foreign keys an index of their own again: gone once more.
    for table, foreign_key_index in FOREIGN_KEY_INDEXES.items():
        drop_index_if_present(foreign_key_index, table)


def downgrade() -> None:
    # Those foreign keys lean on the new indexes now: the indexes they had, as the server named
    # them, before the new ones go.
    for table, foreign_key_index in FOREIGN_KEY_INDEXES.items():
        create_index_unless_present(foreign_key_index, table, [foreign_key_index])
    for name, (table, _columns) in INDEXES.items():
        drop_index_if_present(name, table)
