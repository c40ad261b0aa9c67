"""Sandbox webhook chaos: how the webhook service misbehaves towards one merchant's endpoint, on
request (PUT /api/v1/sandbox/webhook-chaos), so a merchant can test their receiver against what
production webhooks do. Shared by the API (which stores it) and the webhook service (which
applies it, and labels every attempt it changed with a `ChaosKind` in the delivery log).
"""

from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

MAX_CHAOS_DELAY_SECONDS = 60
MAX_INJECTED_FAILURES = 10
# Older than the 5-minute tolerance of Standard Webhooks receivers.
STALE_TIMESTAMP_SECONDS = 10 * 60


class ChaosKind(StrEnum):
    """The label of an attempt that chaos changed (webhook_attempts.chaos)."""

    DUPLICATE = "duplicate"  # the same webhook-id sent again after a 2xx
    OUT_OF_ORDER = "out_of_order"  # payout.processing held until after the final event
    DELAYED = "delayed"  # held `delay_seconds` before the attempt
    STALE_TIMESTAMP = "stale_timestamp"  # signed with a webhook-timestamp 10 minutes old
    OLD_SECRET = "old_secret"  # signed with the previous secret only, after a rotation
    INJECTED_FAILURE = "injected_failure"  # no call made: the attempt failed on our side


# The kinds whose attempt is a real call, sent as a clean one is (a hold comes before it, and its
# latency is measured after the hold): the endpoint's answer to it is an ordinary answer.
SENT_CLEAN = frozenset({ChaosKind.DUPLICATE, ChaosKind.OUT_OF_ORDER, ChaosKind.DELAYED})


@dataclass(frozen=True)
class WebhookChaos:
    """Shares are percentages (0-100) of events, picked per event (the same event always gets
    the same answer). Chaos changes an event's first attempts only, one kind per attempt, and
    never a resend; the attempts after them are clean, so every event still arrives once the
    merchant's receiver refuses what it must refuse (webhook_service.chaos has the order)."""

    duplicate_percent: int = 0
    out_of_order: bool = False
    delay_seconds: int = 0
    stale_timestamp_percent: int = 0
    old_secret_only: bool = False
    fail_first_attempts: int = 0

    @property
    def active(self) -> bool:
        return self != WebhookChaos()


# The setting's fields, in order; the columns of webhook_chaos_settings carry the same names.
CHAOS_FIELDS = tuple(field.name for field in fields(WebhookChaos))


def chaos_of(values: Sequence[Any]) -> WebhookChaos:
    """The setting from its values in CHAOS_FIELDS order (a stored row, or a row's columns)."""
    return WebhookChaos(**dict(zip(CHAOS_FIELDS, values, strict=True)))


def signing_for(
    kind: ChaosKind | None, *, timestamp: int, secrets: list[str], previous_secret: str | None
) -> tuple[int, list[str]]:
    """The webhook-timestamp and the secrets that sign an attempt: a stale timestamp (the
    signature is valid over it), or the previous secret alone."""
    if kind is ChaosKind.STALE_TIMESTAMP:
        return timestamp - STALE_TIMESTAMP_SECONDS, secrets
    if kind is ChaosKind.OLD_SECRET and previous_secret:
        return timestamp, [previous_secret]
    return timestamp, secrets
