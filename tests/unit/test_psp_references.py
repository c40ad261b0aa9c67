"""The references the sandbox gives each attempt of a payout (contracts.domain.psp_references)."""

from contracts.domain.psp_references import (
    generated_for_another,
    generated_references_before,
    simulated_reference,
)

MINE = "0b7d51a6-94c4-4a53-9a51-f3a6b7a0c0de"
THEIRS = "0b7d51a6-0000-4000-8000-000000000001"  # the same first 8 digits


def test_a_simulation_names_the_whole_payout_id() -> None:
    assert simulated_reference(MINE, 1) == "SIM-0B7D51A694C44A539A51F3A6B7A0C0DE-1"
    assert simulated_reference(MINE, 1) != simulated_reference(THEIRS, 1)
    assert generated_for_another(MINE, simulated_reference(THEIRS, 1))
    assert not generated_for_another(MINE, simulated_reference(MINE, 2))


def test_a_simulation_named_as_first_written_is_still_the_payouts_own() -> None:
    """Payouts simulated before keep `SIM-<8 digits>-<cycle>`: their callbacks must not be
    judged another payout's, and an earlier attempt's is still stale."""
    assert not generated_for_another(MINE, "SIM-0B7D51A6-1")
    assert "SIM-0B7D51A6-1" in generated_references_before(MINE, 2)
