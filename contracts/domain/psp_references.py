"""The references the mock PSP gives each attempt (hold cycle) of a payout.

Deterministic, so a replayed scenario gives the same reference, and distinct per attempt, so a
callback naming an earlier attempt is recognised as such; and distinct per payout, so a callback
naming another payout's attempt is too.
"""

import re


def psp_reference_for(payout_id: str, hold_cycle: int) -> str:
    """What the processor's mock PSP calls attempt `hold_cycle` of the payout."""
    return f"PSP-{payout_id.replace('-', '')[:12].upper()}-{hold_cycle}"


def simulated_reference(payout_id: str, hold_cycle: int) -> str:
    """What a sandbox simulation calls the attempt when the PSP has not named it yet: the whole
    id. Its first 8 digits were 32 bits, and references are one namespace for every merchant:
    the second of two payouts sharing them could not be simulated (409, about once in 100 by
    9,000 payouts)."""
    return f"SIM-{payout_id.replace('-', '').upper()}-{hold_cycle}"


def _simulated_as_first_written(payout_id: str, hold_cycle: int) -> str:
    """A simulation's reference as first written (8 digits): payouts simulated then keep it."""
    return f"SIM-{payout_id[:8].upper()}-{hold_cycle}"


_GENERATED = re.compile(r"(?:PSP-[0-9A-F]{12}|SIM-[0-9A-F]{32}|SIM-[0-9A-F]{8})-[1-9][0-9]*")


def generated_for_another(payout_id: str, reference: str) -> bool:
    """A reference of the shape we generate, which no attempt of this payout was given: we
    generated it for another payout."""
    if not _GENERATED.fullmatch(reference):
        return False
    cycle = int(reference.rsplit("-", 1)[1])
    return reference not in _generated_for(payout_id, cycle)


def generated_references_before(payout_id: str, hold_cycle: int) -> frozenset[str]:
    """Every reference we generated for the attempts before `hold_cycle`."""
    return frozenset(
        reference
        for cycle in range(1, hold_cycle)
        for reference in _generated_for(payout_id, cycle)
    )


def _generated_for(payout_id: str, hold_cycle: int) -> tuple[str, ...]:
    return (
        psp_reference_for(payout_id, hold_cycle),
        simulated_reference(payout_id, hold_cycle),
        _simulated_as_first_written(payout_id, hold_cycle),
    )
