"""Draining on SIGTERM: /ready answers 503 first (so a load balancer stops sending traffic),
then after `drain_seconds` the server's own SIGTERM handler runs (uvicorn stops accepting and
finishes the requests in flight). A second SIGTERM, or Ctrl-C, to a serving process stops it at
once.

Installed from the app's lifespan, in each process that serves it: with `PAYOUTS_API_WORKERS`
above 1 (docker-compose.yml runs 2) uvicorn's supervisor runs plain servers in its workers and
forwards SIGTERM to each, and a server subclass drained nothing there. That supervisor hands a
worker one signal only, whatever it gets (SIGINT too, as SIGTERM): to cut a drain short there,
signal the process group (a terminal's Ctrl-C does), or the workers themselves."""

import asyncio
import signal
from types import FrameType

from starlette.datastructures import State


def drain_on_sigterm(state: State, drain_seconds: float) -> None:
    """Wrap the SIGTERM handler the server installed; none (a test's in-process app): nothing."""
    stop_now = signal.getsignal(signal.SIGTERM)
    if drain_seconds <= 0 or not callable(stop_now):
        return
    loop = asyncio.get_running_loop()

    def drain(sig: int, frame: FrameType | None) -> None:
        if state.draining:
            stop_now(sig, frame)
            return
        state.draining = True
        loop.call_later(drain_seconds, stop_now, sig, frame)

    signal.signal(signal.SIGTERM, drain)
