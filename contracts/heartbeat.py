"""A long-running service's readiness, as a file it touches while it works (PAYOUTS_HEARTBEAT_FILE):
its consumers subscribed with the broker and the database answering (contracts/consumer_health.py),
the relay's rounds running, the sink serving. `payouts healthcheck` (cli/healthcheck.py) judges
the file's age, in the container, for docker compose: a consumer waiting for the migrations, or
whose broker or database does not answer, stops touching it and turns unhealthy, where `docker
compose ps` said "Up".

Without the setting (outside containers) nothing is written."""

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

HEARTBEAT_FILE_VARIABLE = "PAYOUTS_HEARTBEAT_FILE"  # Settings.heartbeat_file
BEAT_EVERY_SECONDS = 5.0

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
            if await self._works():
                self.heartbeat.touch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.heartbeat.every_seconds)

    async def _works(self) -> bool:
        """A check that failed says "not working" (logged): it ended the task, and the service
        read as stale for good while it worked."""
        try:
            return await self.working()
        except Exception as error:
            log.warning("the heartbeat's check failed: %r", error)
            return False
