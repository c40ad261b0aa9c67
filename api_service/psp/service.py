"""PSP callbacks (IPN) and sandbox simulations.

Each is judged, under the payout's row lock, against the newest outcome already *accepted* for
the payout (not the last one the processor has applied), so two callbacks sent back to back get
the answers they would get a minute apart. An accepted outcome is recorded once per event id,
bound to the payout's current attempt (hold cycle), and handed to the processor through the
outbox; the processor applies accepted outcomes in the order they were accepted.
"""

import hashlib
import hmac
import re

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.mysql import insert as insert_or_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.errors import (
    EventIdReused,
    InvalidTransition,
    PspReferenceOfAnotherPayout,
    StalePspReference,
)
from contracts.db.engine import utcnow
from contracts.db.models import Payout, PspCallback, PspReferenceClaim
from contracts.domain.psp_references import generated_for_another, generated_references_before
from contracts.domain.statuses import PayoutStatus, PspOutcome, psp_outcome_allowed
from contracts.payout_events import Announcements


def psp_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# A header arrives as latin-1 text: anything but 64 ASCII hex digits cannot be a signature.
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)


def signature_matches(secret: str, body: bytes, signature: str | None) -> bool:
    """Constant-time comparison of bytes, once the header has the shape of a signature."""
    if signature is None or not _HEX_SHA256.fullmatch(signature):
        return False
    expected = psp_signature(secret, body).encode()
    return hmac.compare_digest(expected, signature.lower().encode())


async def _names_an_earlier_attempt(
    session: AsyncSession, payout: Payout, psp_reference: str
) -> bool:
    """The reference was given to an attempt before the payout's current one."""
    if psp_reference == payout.psp_reference or payout.hold_cycle == 1:
        return False
    if psp_reference in generated_references_before(payout.id, payout.hold_cycle):
        return True
    earlier = await session.scalar(
        select(PspCallback.event_id)
        .where(
            PspCallback.payout_id == payout.id,
            PspCallback.psp_reference == psp_reference,
            PspCallback.hold_cycle < payout.hold_cycle,
        )
        .limit(1)
    )
    return earlier is not None


async def _names_another_payout(session: AsyncSession, payout: Payout, psp_reference: str) -> bool:
    """The reference is another payout's: one we generated for it, its current one, or one the
    PSP named in an outcome accepted for it (not applied yet, or of an attempt before a
    reinitiate: two callbacks back to back get the answers they would a minute apart). Compared
    exactly: references are case-sensitive, and payouts.psp_reference is compared without case."""
    if psp_reference == payout.psp_reference:
        return False
    if generated_for_another(payout.id, psp_reference):
        return True
    await _claim(session, payout, psp_reference)
    current = select(Payout.psp_reference).where(  # ix_payouts_psp_reference
        Payout.psp_reference == psp_reference, Payout.id != payout.id
    )
    accepted = select(PspCallback.psp_reference).where(  # ix_psp_callbacks_psp_reference
        PspCallback.psp_reference == psp_reference, PspCallback.payout_id != payout.id
    )
    named = await session.scalars(current.union_all(accepted))
    return psp_reference in set(named)


async def _claim(session: AsyncSession, payout: Payout, psp_reference: str) -> None:
    """Take the reference's claim row (written once, by the first payout to name it). A callback
    naming it for another payout at the same moment waits here for this transaction, and then
    reads its outcome: each locks only its own payout, and neither read the other's uncommitted
    outcome, so both were accepted."""
    claim = insert_or_update(PspReferenceClaim).values(
        psp_reference=psp_reference, payout_id=payout.id
    )
    await session.execute(
        claim.on_duplicate_key_update(payout_id=PspReferenceClaim.__table__.c.payout_id)
    )


# The body's field that names the outcome, by where the callback came from: an IPN's `status`, a
# sandbox simulation's `outcome` (what an INVALID_TRANSITION refuses).
OUTCOME_FIELD_OF_SOURCE = {"IPN": "status", "SANDBOX": "outcome"}


async def _recorded(
    session: AsyncSession, event_id: str, payout: Payout, outcome: PspOutcome
) -> bool:
    """Whether the event id is recorded already, for this payout and outcome (else
    EventIdReused: a second event under one id would be dropped as a duplicate without a word,
    say a REVERSED sent under the id of the SUCCESS before it)."""
    recorded = await session.get(PspCallback, event_id, populate_existing=True)
    if recorded is not None and recorded.payout_id != payout.id:
        raise EventIdReused(f"eventId {event_id} was already sent for another payout")
    if recorded is not None and recorded.outcome != outcome.value:
        raise EventIdReused(f"eventId {event_id} was already sent with status {recorded.outcome}")
    return recorded is not None


async def accept_psp_outcome(
    session: AsyncSession,
    payout: Payout,
    *,
    event_id: str,
    outcome: PspOutcome,
    psp_reference: str | None,
    failure_reason: str | None,
    source: str,
    request_id: str,
) -> bool:
    """Record the outcome for the processor. `payout` must be locked by the caller's transaction.

    False when this event id was already recorded for this payout and outcome (acknowledged
    again, changes nothing); EventIdReused when it was for another payout or outcome;
    StalePspReference when the reference names an earlier attempt, PspReferenceOfAnotherPayout
    when it names another payout; InvalidTransition when the outcome does not follow the newest
    accepted one."""
    if await _recorded(session, event_id, payout, outcome):
        return False
    if psp_reference and await _names_an_earlier_attempt(session, payout, psp_reference):
        raise StalePspReference
    if psp_reference and await _names_another_payout(session, payout, psp_reference):
        raise PspReferenceOfAnotherPayout
    latest = PayoutStatus(payout.accepted_outcome or payout.status)
    if not psp_outcome_allowed(latest, outcome):
        raise InvalidTransition(
            f"{latest} -> {outcome} is not allowed", field=OUTCOME_FIELD_OF_SOURCE[source]
        )
    try:
        # A savepoint: the same event id sent for another payout loses here without rolling
        # back (and expiring the objects of) the caller's transaction, which it does not own.
        async with session.begin_nested():
            await session.execute(
                insert(PspCallback).values(
                    event_id=event_id,
                    payout_id=payout.id,
                    hold_cycle=payout.hold_cycle,
                    outcome=outcome.value,
                    psp_reference=psp_reference,
                    failure_reason=failure_reason,
                    source=source,
                    received_at=utcnow(),
                )
            )
    except IntegrityError:  # recorded meanwhile, by a callback of another payout
        # EventIdReused when it is there to be read
        await _recorded(session, event_id, payout, outcome)
        return False
    await session.execute(
        update(Payout).where(Payout.id == payout.id).values(accepted_outcome=outcome.value)
    )
    announcements = Announcements(correlation_id=request_id)
    announcements.apply_outcome(
        payout,
        event_id=event_id,
        outcome=outcome,
        psp_reference=psp_reference,
        failure_reason=failure_reason,
    )
    await announcements.write(session)
    return True
