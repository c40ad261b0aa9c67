"""A service's heartbeat file (contracts/heartbeat.py) and `payouts healthcheck`, which judges it
for a container healthcheck: exit 0 while fresh, else 1 with one line saying why."""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.webhooks import build_sink
from contracts.heartbeat import (
    HEARTBEAT_FILE_VARIABLE,
    BeatWhileWorking,
    Heartbeat,
    heartbeat_problem,
)
from contracts.settings import Settings
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]


def touched(path: Path, seconds_ago: float) -> Path:
    path.touch()
    then = time.time() - seconds_ago
    os.utime(path, (then, then))
    return path


@pytest.mark.parametrize(
    ("seconds_ago", "problem"),
    [
        (0, None),
        (29, None),
        (31, "is stale: 31 s old (at most 30 s)"),
        (3600, "is stale: 3600 s old (at most 30 s)"),
    ],
)
def test_a_heartbeat_is_fresh_for_its_max_age(
    tmp_path: Path, seconds_ago: float, problem: str | None
) -> None:
    path = touched(tmp_path / "heartbeat", seconds_ago)

    said = heartbeat_problem(path, max_age_seconds=30, now=time.time())

    assert said == (None if problem is None else f"heartbeat at {path} {problem}")


def test_no_file_is_a_service_that_never_started_working(tmp_path: Path) -> None:
    said = heartbeat_problem(tmp_path / "heartbeat", max_age_seconds=30, now=time.time())
    assert said == f"no heartbeat at {tmp_path / 'heartbeat'}: the service has not started working"


def test_no_setting_is_no_heartbeat_to_judge() -> None:
    said = heartbeat_problem(None, max_age_seconds=30, now=time.time())
    assert said == f"{HEARTBEAT_FILE_VARIABLE} is not set: no heartbeat to judge"


def test_the_setting_is_the_variable_the_healthcheck_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HEARTBEAT_FILE_VARIABLE, "")
    assert Settings().heartbeat_file is None  # off, as outside containers
    monkeypatch.setenv(HEARTBEAT_FILE_VARIABLE, str(tmp_path / "heartbeat"))
    assert Settings().heartbeat_file == str(tmp_path / "heartbeat")


def test_a_beat_touches_the_file_at_most_once_an_interval(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path / "heartbeat", every_seconds=60)
    heartbeat.beat()
    assert heartbeat.path is not None and heartbeat.path.exists()
    touched(heartbeat.path, 10)

    heartbeat.beat()  # a relay's next round, milliseconds later

    assert time.time() - heartbeat.path.stat().st_mtime >= 10


def test_a_heartbeat_without_a_file_writes_nothing(tmp_path: Path) -> None:
    heartbeat = Heartbeat.at(None)
    heartbeat.beat()
    heartbeat.clear()
    assert heartbeat.path is None and list(tmp_path.iterdir()) == []


def test_a_file_that_cannot_be_written_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    heartbeat = Heartbeat(tmp_path / "no-such-directory" / "heartbeat")
    heartbeat.beat()  # in the relay's loop: an error here stopped the relay
    heartbeat.beat()  # within the interval: not tried (nor logged) again
    assert caplog.text.count("the heartbeat file could not be touched") == 1


def test_clearing_removes_the_file_of_a_process_before(tmp_path: Path) -> None:
    heartbeat = Heartbeat(touched(tmp_path / "heartbeat", 0))
    heartbeat.clear()
    assert heartbeat.path is not None and not heartbeat.path.exists()


async def test_the_task_beats_only_while_the_service_works(tmp_path: Path) -> None:
    working = asyncio.Event()
    asked: list[bool] = []

    async def works() -> bool:
        asked.append(working.is_set())
        return asked[-1]

    async def asked_thrice() -> bool:
        return len(asked) >= 3

    heartbeat = Heartbeat(tmp_path / "heartbeat", every_seconds=0.01)
    beating = BeatWhileWorking(heartbeat, works)
    await beating.start()
    try:
        await eventually(asked_thrice, what="three beats' questions")
        assert not (tmp_path / "heartbeat").exists(), "beats while the service does not work"
        working.set()
        await eventually(_fresh(tmp_path / "heartbeat"), what="a beat")
    finally:
        await beating.stop()
    assert not (tmp_path / "heartbeat").exists(), "a stopped service leaves no fresh heartbeat"


async def test_the_sink_beats_while_it_serves(tmp_path: Path) -> None:
    sink = build_sink(None, Heartbeat(touched(tmp_path / "heartbeat", 3600)))
    async with sink.router.lifespan_context(sink):
        await eventually(_fresh(tmp_path / "heartbeat"), what="the sink's beat")
    assert not (tmp_path / "heartbeat").exists()


def _touched_within(path: Path, seconds: float) -> bool:
    return path.exists() and time.time() - path.stat().st_mtime < seconds


def _fresh(path: Path) -> Callable[[], Awaitable[bool]]:
    async def fresh() -> bool:
        return _touched_within(path, 60)

    return fresh


@pytest.mark.parametrize(
    ("seconds_ago", "code", "said"),
    [(1, 0, ""), (45, 1, "is stale: 45 s old (at most 30 s)"), (None, 1, "no heartbeat at")],
)
def test_payouts_healthcheck_exits_0_only_on_a_fresh_heartbeat(
    tmp_path: Path, seconds_ago: float | None, code: int, said: str
) -> None:
    path = tmp_path / "heartbeat"
    if seconds_ago is not None:
        touched(path, seconds_ago)

    result = CliRunner().invoke(
        app,
        ["healthcheck", "--max-age-seconds", "30"],
        env={HEARTBEAT_FILE_VARIABLE: str(path)},
    )

    assert result.exit_code == code, result.output
    assert said in result.output
    assert len(result.output.splitlines()) == (1 if code else 0)


def test_payouts_healthcheck_without_the_setting_fails() -> None:
    result = CliRunner().invoke(app, ["healthcheck"], env={HEARTBEAT_FILE_VARIABLE: ""})
    assert result.exit_code == 1
    assert f"{HEARTBEAT_FILE_VARIABLE} is not set" in result.output


@pytest.mark.parametrize(("fresh", "code"), [(True, 0), (False, 1)])
def test_the_probe_compose_runs_is_the_same_command(tmp_path: Path, fresh: bool, code: int) -> None:
    """`python -m cli.healthcheck`, as docker-compose.yml runs it, without the whole CLI."""
    path = tmp_path / "heartbeat"
    if fresh:
        touched(path, 0)
    probe = subprocess.run(
        [sys.executable, "-m", "cli.healthcheck", "--max-age-seconds", "30"],
        cwd=ROOT,
        env={**os.environ, HEARTBEAT_FILE_VARIABLE: str(path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == code, probe.stderr
