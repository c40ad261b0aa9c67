"""The bench report's CPU table: each process's share of a core and what a payout costs it."""

from bench.report import _resources, cpu_ms_per_payout


def test_cpu_per_payout_is_the_share_of_a_core_over_the_creates_per_second() -> None:
    assert cpu_ms_per_payout(38.0, 50.0) == 7.6  # 0.38 s of CPU a second, for 50 payouts
    assert cpu_ms_per_payout(38.0, 0.0) is None


def test_the_cpu_table_has_every_process_and_their_sum() -> None:
    phase = {
        "role": "peak",
        "createsPerSecond": 50.0,
        "cpuPercentOfOneCore": {"api": 38.0, "webhooks-1": 29.0},
        "coreWaitPercent": {"api": 61.2},
    }
    lines = _resources({"runs": [{"phases": [phase]}]})

    rows = [line for line in lines if line.startswith(("| api", "| webhooks-1", "| all"))]
    assert rows == [
        "| api | 38.0 | 7.60 | 61.2 |",
        "| webhooks-1 | 29.0 | 5.80 | - |",
        "| all | 67.0 | 13.40 | - |",
    ]
