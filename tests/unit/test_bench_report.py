"""The bench report's CPU table: each process's share of a core and what a payout costs it."""

from bench.report import _resources, cpu_ms_per_payout
from bench.sampler import LOAD_GENERATOR


def test_cpu_per_payout_is_the_share_of_a_core_over_the_creates_per_second() -> None:
    assert cpu_ms_per_payout(38.0, 50.0) == 7.6  # 0.38 s of CPU a second, for 50 payouts
    assert cpu_ms_per_payout(38.0, 0.0) is None


def test_the_cpu_table_has_every_process_the_systems_sum_and_the_whole_sum() -> None:
    """`system` leaves out the bench's own load generator and webhook receiver, which the sum
    quoted as the system's cost counted (the bench review)."""
    phase = {
        "role": "peak",
        "createsPerSecond": 50.0,
        "cpuPercentOfOneCore": {"api": 38.0, "webhooks-1": 29.0, LOAD_GENERATOR: 3.0},
        "coreWaitPercent": {"api": 61.2},
    }
    lines = _resources({"runs": [{"phases": [phase]}]})

    named = ("| api", "| webhooks-1", "| system", "| all")
    rows = [line for line in lines if line.startswith(named)]
    assert rows == [
        "| api | 38.0 | 7.60 | 61.2 |",
        "| webhooks-1 | 29.0 | 5.80 | - |",
        "| system | 67.0 | 13.40 | - |",
        "| all | 70.0 | 14.00 | - |",
    ]
