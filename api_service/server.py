"""Serving the API: on SIGTERM/SIGINT, /ready answers 503 first (so a load balancer stops sending
traffic), then after `drain_seconds` uvicorn stops accepting and finishes in-flight requests."""

import asyncio
import signal
from types import FrameType

import uvicorn

from api_service.main import app


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self.drain_seconds <= 0 or sig != signal.SIGTERM:
            super().handle_exit(sig, frame)  # a second signal, or Ctrl-C: stop now
            return
        self._draining = True
        app.state.draining = True
        asyncio.get_event_loop().call_later(self.drain_seconds, super().handle_exit, sig, frame)
