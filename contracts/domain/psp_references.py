"""The references the mock PSP gives each attempt (hold cycle) of a payout.

Deterministic, so a replayed scenario gives the same reference, and distinct per attempt, so a
callback naming an earlier attempt is recognised as such.
"""


def psp_reference_for(payout_id: str, hold_cycle: int) -> str:
    """What the processor's mock PSP calls attempt `hold_cycle` of the payout."""
    return f"PSP-{payout_id.replace('-', '')[:12].upper()}-{hold_cycle}"


def simulated_reference(payout_id: str, hold_cycle: int) -> str:
    """What a sandbox simulation calls the attempt when the PSP has not named it yet."""
    return f"SIM-{payout_id[:8].upper()}-{hold_cycle}"


def generated_references_before(payout_id: str, hold_cycle: int) -> frozenset[str]:
    """Every reference we generated for the attempts before `hold_cycle`."""
    return frozenset(
        reference
        for cycle in range(1, hold_cycle)
        for reference in (
            psp_reference_for(payout_id, cycle),
            simulated_reference(payout_id, cycle),
        )
    )
