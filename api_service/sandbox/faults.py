"""Faults a merchant can ask for (`X-Sandbox-Fault`, or merchant-wide with PUT /sandbox/faults):

- `latency=<ms>`: the call runs normally, `<ms>` later;
- `status=429|500|503`: answered at once with that status, nothing done (429 and 503 carry
  `Retry-After`);
- `drop-connection`: a `200` status line promising a body, then the connection closes before it,
  nothing done;
- `timeout-after-commit`: the call runs and commits, then the answer is lost (504). A retry with
  the same idempotency key gets the committed answer replayed.
"""

import random
import re
from dataclasses import dataclass
from enum import StrEnum

from contracts.domain.text import trimmed

FAULT_HEADER = "X-Sandbox-Fault"
# The scope state where `timeout-after-commit` notes the status it hid (the request log keeps it).
LOST_STATUS = "lost_status"
MAX_LATENCY_MS = 30_000
INJECTED_STATUSES = (429, 500, 503)
RETRY_AFTER_SECONDS = 2
FAULT_RULE = (
    f"must be latency=<0-{MAX_LATENCY_MS}>, status=429|500|503, drop-connection or "
    "timeout-after-commit"
)

_SPEC = re.compile(
    r"(?:latency=(?P<ms>\d{1,5})|status=(?P<status>\d{3})|(?P<name>[a-z-]+))", re.ASCII
)


class FaultKind(StrEnum):
    LATENCY = "latency"
    STATUS = "status"
    DROP_CONNECTION = "drop-connection"
    TIMEOUT_AFTER_COMMIT = "timeout-after-commit"


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    value: int | None = None  # the latency in ms, or the status

    @property
    def label(self) -> str:
        """As the merchant wrote it: in the request log and the settings."""
        return self.kind.value if self.value is None else f"{self.kind.value}={self.value}"

    @property
    def metric_label(self) -> str:
        """The label without a latency's milliseconds: any merchant could otherwise add one
        metric series per value (30,001 of them) to the API's metrics."""
        return self.kind.value if self.kind is FaultKind.LATENCY else self.label

    @property
    def retry_after_seconds(self) -> int | None:
        return RETRY_AFTER_SECONDS if self.value in (429, 503) else None


def parse_fault(spec: str) -> Fault:
    """The fault `spec` names; ValueError (with FAULT_RULE) when it names none."""
    match = _SPEC.fullmatch(trimmed(spec).lower())
    if match is None:
        raise ValueError(FAULT_RULE)
    if match["ms"] is not None:
        if int(match["ms"]) > MAX_LATENCY_MS:
            raise ValueError(FAULT_RULE)
        return Fault(FaultKind.LATENCY, int(match["ms"]))
    if match["status"] is not None:
        if int(match["status"]) not in INJECTED_STATUSES:
            raise ValueError(FAULT_RULE)
        return Fault(FaultKind.STATUS, int(match["status"]))
    if match["name"] in (FaultKind.DROP_CONNECTION, FaultKind.TIMEOUT_AFTER_COMMIT):
        return Fault(FaultKind(match["name"]))
    raise ValueError(FAULT_RULE)


@dataclass(frozen=True)
class FaultShare:
    """A merchant-wide setting: `fault` on `percent` % of the merchant's calls."""

    fault: Fault
    percent: int

    def strikes(self, draw: float | None = None) -> bool:
        """Whether this call gets the fault (`draw` in [0, 1) for tests)."""
        return (random.random() if draw is None else draw) * 100 < self.percent
