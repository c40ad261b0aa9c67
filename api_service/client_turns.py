"""Each client's requests take turns: at most `per_client` of one client's requests run at a time
in an API process; the rest wait in memory, in the order they came, holding no database
connection.

A client is an API key (or, for a call without one, the address it came from). Without the cap,
one merchant's burst of 1,000 creates queued for the process's database connections ahead of
everyone else's, and another merchant's single create waited 8.9 s behind it (a 10 ms call),
then got a 503 once the wait passed the pool's timeout (neighbours review). Capped, the burst
holds at most `per_client` connections, and the other merchants' calls find theirs at once.

A request that waits longer than `wait_seconds` is answered 429 `RATE_LIMITED` with
`Retry-After`: only its own client's requests were ahead of it.
"""

import asyncio
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import Gauge
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api_service.deps import API_KEY_HEADER
from api_service.errors import RateLimited
from api_service.middleware import is_api_call, reject

WAITING = Gauge(
    "payouts_api_requests_waiting_for_their_turn",
    "API requests waiting because their client (API key) has PAYOUTS_API_MAX_IN_FLIGHT_PER_KEY "
    "requests running in this process",
)
RETRY_AFTER_SECONDS = 1


@dataclass
class _Client:
    running: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


@dataclass
class ClientTurns:
    per_client: int
    wait_seconds: float
    _clients: dict[str, _Client] = field(default_factory=dict)

    async def start(self, client: str) -> None:
        """Return when `client` may run one more request (then `end` it); RateLimited when its
        turn does not come within `wait_seconds`."""
        state = self._clients.setdefault(client, _Client())
        if state.running < self.per_client and not state.waiting:
            state.running += 1
            return
        turn = asyncio.get_running_loop().create_future()
        state.waiting.append(turn)
        WAITING.inc()
        try:
            done, _ = await asyncio.wait({turn}, timeout=self.wait_seconds)
        except asyncio.CancelledError:
            self._give_up(client, turn)
            raise
        finally:
            WAITING.dec()
        if not done:
            self._give_up(client, turn)
            raise RateLimited(
                f"Too many requests in flight for this API key: {self.per_client} run at a "
                "time, the others wait their turn",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )

    def end(self, client: str) -> None:
        """A request of `client` ended: its turn passes to the client's next waiting request."""
        state = self._clients[client]
        while state.waiting:
            turn = state.waiting.popleft()
            if not turn.done():  # not given up meanwhile
                turn.set_result(None)
                return
        state.running -= 1
        if state.running == 0:
            del self._clients[client]

    def _give_up(self, client: str, turn: asyncio.Future[None]) -> None:
        """A waiting request left (its deadline, or its client went away): if its turn had come
        meanwhile, it passes on; otherwise it leaves the line."""
        if turn.done():
            self.end(client)
            return
        turn.cancel()
        state = self._clients[client]
        state.waiting.remove(turn)


def client_of(scope: Scope) -> str:
    """The API key the request carries, else the address it came from."""
    api_key = Headers(scope=scope).get(API_KEY_HEADER)
    if api_key is not None:
        return f"key:{api_key}"
    address = scope.get("client")
    return f"address:{address[0] if address else ''}"


class ClientTurnsMiddleware:
    """Runs each request under /api/ (the probes aside) in its client's turn."""

    def __init__(
        self, app: ASGIApp, *, turns: ClientTurns, api_prefix: str, probes: frozenset[str]
    ) -> None:
        self.app = app
        self.turns = turns
        self.api_prefix = api_prefix
        self.probes = probes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_api_call(scope, self.api_prefix, self.probes):
            await self.app(scope, receive, send)
            return
        client = client_of(scope)
        try:
            await self.turns.start(client)
        except RateLimited as refused:
            await reject(send, scope["state"]["request_id"], refused)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.turns.end(client)
