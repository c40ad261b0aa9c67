"""A long-running service's readiness, as a file it touches while it works (PAYOUTS_HEARTBEAT_FILE):
its consumers subscribed and its broker connected, the relay's rounds running, the sink
serving. `payouts healthcheck` (cli/healthcheck.py) judges the file's age, in the container, for
docker compose: a consumer waiting for the migrations, or whose broker connection is down, stops
touching it and turns unhealthy, where `docker compose ps` said "Up".

Without the setting (outside containers) nothing is written."""

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not loaded by `payouts healthcheck`, run every few seconds in a container
    from faststream.rabbit import RabbitBroker

log = logging.getLogger(__name__)

HEARTBEAT_FILE_VARIABLE = "PAYOUTS_HEARTBEAT_FILE"  # Settings.heartbeat_file
BEAT_EVERY_SECONDS = 5.0
# A broker connection that does not answer within this counts as down for this beat.
BROKER_PING_SECONDS = 2.0

Working = Callable[[], Awaitable[bool]]


@dataclass
class Heartbeat:
    """The file at `path` (None: off), touched at most every `every_seconds`."""

    path: Path | None
    every_seconds: float = BEAT_EVERY_SECONDS
    _last_beat: float = field(default=float("-inf"), init=False)

    @classmethod
    def at(cls, path: str | None) -> "Heartbeat":
        return cls(Path(path) if path else None)

    def beat(self) -> None:
        """Touch the file, unless it was touched less than `every_seconds` ago (a relay's round
        every few milliseconds calls this)."""
        if time.monotonic() - self._last_beat >= self.every_seconds:
            self.touch()

    def touch(self) -> None:
        if self.path is not None:
            self._last_beat = time.monotonic()
            with self._said_if_failed("touched"):
                self.path.touch()

    def clear(self) -> None:
        """No file: at a start (a restarted container keeps the file of the process before, fresh
        while this one may still wait for the database) and at a stop."""
        self._last_beat = float("-inf")
        if self.path is not None:
            with self._said_if_failed("removed"):
                self.path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _said_if_failed(self, done: str) -> Iterator[None]:
        """A file that cannot be written (a directory that is not there, or not ours) is logged:
        the service works on, and its healthcheck says the file is missing or stale."""
        try:
            yield
        except OSError as error:
            log.warning("the heartbeat file could not be %s: %s", done, error)


def heartbeat_problem(path: Path | None, *, max_age_seconds: float, now: float) -> str | None:
    """Why the heartbeat at `path` says the service is not working at `now` (epoch seconds), or
    None when it was touched within `max_age_seconds`."""
    if path is None:
        return f"{HEARTBEAT_FILE_VARIABLE} is not set: no heartbeat to judge"
    try:
        age = now - os.stat(path).st_mtime
    except FileNotFoundError:
        return f"no heartbeat at {path}: the service has not started working"
    if age > max_age_seconds:
        return f"heartbeat at {path} is stale: {age:.0f} s old (at most {max_age_seconds:g} s)"
    return None


class BeatWhileWorking:
    """A task touching `heartbeat` every interval while `working()` says so. `clear` is a
    service's first startup hook, `start` its last (its work taken), `stop` its first shutdown
    hook."""

    def __init__(self, heartbeat: Heartbeat, working: Working) -> None:
        self.heartbeat = heartbeat
        self.working = working
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def clear(self) -> None:
        self.heartbeat.clear()

    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        self.heartbeat.clear()

    async def _run(self) -> None:
        while not self._stop.is_set():
            if await self.working():
                self.heartbeat.touch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.heartbeat.every_seconds)


def consuming(broker: "RabbitBroker") -> Working:
    """Every subscriber of `broker` consuming and its connection up (a robust connection that lost
    the broker is down until it has reconnected)."""

    async def working() -> bool:
        subscribed = all(subscriber.running for subscriber in broker.subscribers)
        return subscribed and await broker.ping(timeout=BROKER_PING_SECONDS)

    return working
