"""The outbox relay's housekeeping: each chore runs at once, then once per its interval, and one
that fails waits its interval too instead of failing the relay's round; stalled webhook retries
are looked for with the settings' stall time, every minute or twice per stall time when that is
shorter; payouts stalled in RETRY, once per their stall time."""

from typing import Any

import pytest
from prometheus_client import REGISTRY

import processor_service.relay_service as relay_service
from contracts.clock import SANDBOX_TIME
from contracts.db.engine import SessionFactory
from contracts.settings import Environment, Settings
from processor_service.relay_service import (
    CLEANUP_EVERY_SECONDS,
    STALLED_RETRIES_EVERY_SECONDS,
    Chore,
    clean_up_chore,
    housekeeping,
)
from processor_service.stalled_deliveries import EventsSwept


async def test_a_chore_runs_at_once_then_once_per_interval() -> None:
    runs: list[int] = []

    async def run() -> None:
        runs.append(len(runs))

    chore = Chore("test", 3600.0, run)
    await chore.run_if_due()
    await chore.run_if_due()
    assert runs == [0]
    chore.next_at = 0.0  # as if the interval had passed
    await chore.run_if_due()
    assert runs == [0, 1]


async def test_a_chores_failures_are_counted_from_zero_before_the_first() -> None:
    async def run() -> None:
        pass

    Chore("never-failed", 3600.0, run)
    assert (
        REGISTRY.get_sample_value(
            "payouts_relay_housekeeping_failures_total", {"chore": "never-failed"}
        )
        == 0.0
    )


async def test_a_failing_chore_is_logged_and_waits_its_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    async def run() -> None:
        runs.append(len(runs))
        raise OSError("database unavailable")

    def failures() -> float:
        value = REGISTRY.get_sample_value(
            "payouts_relay_housekeeping_failures_total", {"chore": "flaky"}
        )
        return value or 0.0

    before = failures()
    chore = Chore("flaky", 3600.0, run)
    await chore.run_if_due()  # does not raise into the relay's loop
    await chore.run_if_due()
    assert runs == [0]
    assert "housekeeping flaky failed" in caplog.text
    assert failures() == before + 1


@pytest.mark.parametrize(
    ("stalled_seconds", "every_seconds"), [(10, 5.0), (300, STALLED_RETRIES_EVERY_SECONDS)]
)
async def test_the_relay_sends_stalled_retries_again_with_the_settings_stall_times(
    monkeypatch: pytest.MonkeyPatch, stalled_seconds: int, every_seconds: float
) -> None:
    calls: dict[str, dict[str, Any]] = {}

    def recorded(name: str) -> Any:
        async def chore(sessions: SessionFactory, **kwargs: Any) -> int:
            calls[name] = kwargs
            return 0

        return chore

    names = (
        "resend_stalled_retries",
        "resend_stalled_deliveries",
        "resend_stalled_payout_commands",
        "release_retries_due_on_advanced_clocks",
        "measure_outbox_lag",
    )
    for name in names:
        monkeypatch.setattr(relay_service, name, recorded(name))
    settings = Settings(
        webhook_stalled_retry_seconds=stalled_seconds,
        processor_stalled_retry_seconds=stalled_seconds + 1,
        processor_retry_delay_seconds=3.0,
    )
    never_opened: Any = None
    chores = {chore.name: chore for chore in housekeeping(settings, never_opened)}
    for chore in chores.values():
        await chore.run_if_due()

    assert set(calls) == set(names)
    assert calls["resend_stalled_retries"] == {
        "stalled_seconds": stalled_seconds,
        "time": SANDBOX_TIME,
    }
    assert chores["stalled-webhook-retries"].every_seconds == every_seconds
    swept = calls["resend_stalled_deliveries"]
    assert swept == {"stalled_seconds": stalled_seconds, "swept": swept["swept"]}
    assert isinstance(swept["swept"], EventsSwept)  # kept from round to round
    assert chores["stalled-webhook-deliveries"].every_seconds == every_seconds
    assert calls["resend_stalled_payout_commands"] == {
        "stalled_seconds": stalled_seconds + 1,
        "retry_delay_seconds": 3.0,
        "time": SANDBOX_TIME,
    }
    assert chores["stalled-payouts"].every_seconds == stalled_seconds + 1
    assert chores["advanced-clock-webhook-retries"].every_seconds == 1.0
    production = settings.model_copy(update={"env": Environment.PRODUCTION})
    assert "advanced-clock-webhook-retries" not in {
        chore.name for chore in housekeeping(production, never_opened)
    }  # a production merchant has no sandbox clock


def test_the_clean_up_runs_in_a_task_of_its_own() -> None:
    """The clean-up of a backlog (200,000 request-log rows past their week: 7 s) ran in the task
    of the chores due every second (a clock's webhook retries), which waited it out (housekeeping
    review): it is a chore of its own, kept out of housekeeping()'s list, as the ledger audit."""
    never_opened: Any = None
    settings = Settings()

    assert "clean-up" not in {chore.name for chore in housekeeping(settings, never_opened)}
    assert clean_up_chore(settings, never_opened).every_seconds == CLEANUP_EVERY_SECONDS
