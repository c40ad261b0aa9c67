"""How a long-running service stops on SIGTERM or SIGINT: the first signal asks it to finish the
work it holds; a second one, or a stop that outlasts its deadline, ends the process at once.

Without the deadline a dependency gone silent held a stopping service for as long as it stayed
silent: the relay's round waited for the database's 120 s read timeout, then its close for an
answer that never came (still running 170 s after SIGTERM); a consumer's broker close waited
until the AMQP heartbeat gave up (45 s). Compose and `payouts up` then killed them, and a second
SIGTERM did nothing. Ending at once loses nothing: the messages a consumer held unacknowledged are
redelivered, and the outbox rows the relay held unsent are published again."""

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

from contracts.settings import CONSUMER_GRACEFUL_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

# A consumer's own graceful timeout and a moment more: under `payouts up`'s 20 s before it kills,
# and compose's stop_grace_period.
STOP_WITHIN_SECONDS = CONSUMER_GRACEFUL_TIMEOUT_SECONDS + 3
STOPPED_AT_ONCE = 1  # the exit code when the work was not finished


def stop_on_signals(ask_to_stop: Callable[[], None], within: float = STOP_WITHIN_SECONDS) -> None:
    """SIGTERM and SIGINT call `ask_to_stop` (replacing any handler of the running loop's); a
    second signal, or `within` seconds after the first, exit the process at once."""
    loop = asyncio.get_running_loop()
    asked: list[int] = []

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if asked:
            _exit_at_once(f"a second {name}")
        asked.append(signum)
        loop.call_later(within, _exit_at_once, f"still stopping {within:.0f} s after {name}")
        ask_to_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


def _exit_at_once(why: str) -> None:
    log.error("stopping at once (%s): what was in hand is redelivered or sent again", why)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(STOPPED_AT_ONCE)


def being_cancelled() -> bool:
    """Whether the running task itself is being cancelled (a CancelledError it meets may be
    another's: a future a driver cancelled, a probe another caller gave up)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
