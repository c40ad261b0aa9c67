"""The contract's scenario table as test data: what each kind of payout must end as."""

from dataclasses import dataclass
from typing import Any

from contracts.domain.statuses import EventType, PayoutStatus
from tests.support.api_helpers import bank_payout_body

CREATED, PROCESSING, RETRYING = EventType.CREATED, EventType.PROCESSING, EventType.RETRYING


@dataclass(frozen=True)
class Scenario:
    name: str
    account_number: str
    amount: str
    status: PayoutStatus
    attempts: int
    journals: tuple[str, ...]  # ledger journal kinds of the payout, in order
    events: tuple[EventType, ...]  # status events, in order of createdAt
    psp_reference: bool
    failure_code: str | None = None

    def request_body(self) -> dict[str, Any]:
        """A create-payout body that takes this scenario (a bank account, a fresh reference)."""
        return bank_payout_body(
            self.account_number,
            amount=self.amount,
        )

    def is_final(self, payout: dict[str, object]) -> bool:
        """The payout reached this scenario's resting status (PENDING waits at the PSP)."""
        if payout["status"] != self.status.value:
            return False
        return not self.psp_reference or payout["pspReference"] is not None


SCENARIOS = (
    Scenario(
        "0001 succeeds",
        "1234560001",
        "1500.00",
        PayoutStatus.SUCCESS,
        1,
        ("HOLD", "PAYOUT"),
        (CREATED, PROCESSING, EventType.SUCCEEDED),
        psp_reference=True,
    ),
    Scenario(
        "0002 retries then succeeds",
        "1234560002",
        "250.50",
        PayoutStatus.SUCCESS,
        2,
        ("HOLD", "PAYOUT"),
        (CREATED, PROCESSING, RETRYING, PROCESSING, EventType.SUCCEEDED),
        psp_reference=True,
    ),
    Scenario(
        "0003 fails",
        "1234560003",
        "99.99",
        PayoutStatus.FAILED,
        1,
        ("HOLD", "RELEASE"),
        (CREATED, PROCESSING, EventType.FAILED),
        psp_reference=False,
        failure_code="ACCOUNT_INVALID",
    ),
    Scenario(
        "0004 pending at the PSP",
        "1234560004",
        "700.00",
        PayoutStatus.PENDING,
        1,
        ("HOLD",),
        (CREATED, PROCESSING, EventType.PENDING),
        psp_reference=True,
    ),
    Scenario(
        "0005 on hold",
        "1234560005",
        "10.00",
        PayoutStatus.ON_HOLD,
        1,
        ("HOLD",),
        (CREATED, PROCESSING, EventType.ON_HOLD),
        psp_reference=False,
    ),
    Scenario(
        "large amount in review",
        "1234560001",
        "100000.00",
        PayoutStatus.IN_REVIEW,
        1,
        ("HOLD",),
        (CREATED, PROCESSING, EventType.IN_REVIEW),
        psp_reference=False,
    ),
    Scenario(
        "any other account succeeds",
        "1234567777",
        "3000.00",
        PayoutStatus.SUCCESS,
        1,
        ("HOLD", "PAYOUT"),
        (CREATED, PROCESSING, EventType.SUCCEEDED),
        psp_reference=True,
    ),
)
