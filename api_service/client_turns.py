"""Each client's requests take turns: at most `per_client` of one client's requests run at a time
in an API process; the rest wait in memory, in the order they came, holding no database
connection.

A client is a merchant: the merchant of a known API key, or the merchant signed in to the
dashboard. Anything else (a PSP's callback, a key no merchant has, a dashboard page without a
session this process knows) is the address it came from. Without the cap, one merchant's burst of
1,000 creates queued for the process's database connections ahead of everyone else's, and another
merchant's single create waited 8.9 s behind it (a 10 ms call), then got a 503 once the wait
passed the pool's timeout (neighbours review). Capped, the burst holds at most `per_client`
connections, and the other merchants' calls find theirs at once.

The line is never the caller's to choose: a made-up X-API-KEY on each request got each its own
line, and a keyless caller left its address's line by adding one (turns review). A key this
process does not know yet is looked up before the request takes its merchant's turn: once, however
many of its requests arrive together, and in its address's turn, so that a burst of made-up keys
queues for the pool behind its own address only.

A request that waits longer than `wait_seconds` is answered 429 `RATE_LIMITED` with
`Retry-After`: only its own client's requests were ahead of it. Unless the request of its client
that ended last, while it waited, was refused by the database being down, hanging, read-only or
not migrated: then it is refused as that one was (a 503), since the database, not the client's
pace, kept its turn from coming (a hanging database answered a key's eight calls at one in flight
four 503s and four 429s: truth review). A row another operation held says nothing of the calls
behind it: a 429 still. A request whose client goes away while it waits leaves its line (uvicorn
does not cancel it: it ran in full, for nobody).
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Gauge
from starlette.datastructures import Headers, State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_service.dashboard.sessions import SignedInMerchants
from api_service.deps import API_KEY_HEADER, KEY_MERCHANT, merchant_of_key
from api_service.errors import DATABASE_BUSY, ApiError, RateLimited, database_refusal
from api_service.merchant_cache import MerchantCache
from api_service.middleware import HtmlPages, is_api_call, reject
from contracts.api_keys import hash_api_key
from contracts.db.models import Merchant

WAITING = Gauge(
    "payouts_api_requests_waiting_for_their_turn",
    "API requests and dashboard pages waiting because their client (a merchant, else an "
    "address) has PAYOUTS_API_MAX_IN_FLIGHT_PER_KEY requests running in its worker",
    multiprocess_mode="livesum",  # several workers: their sum
)
RETRY_AFTER_SECONDS = 1
TURN_STATE = "client_turn"  # the request's Turn, on scope["state"]

log = logging.getLogger("api")


class ClientGone(Exception):
    """The client of a waiting request went away: the request left its line."""


@dataclass
class _Client:
    running: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)
    ended: int = 0  # requests ended so far
    # The database's refusal of the request that ended last, if it was refused by it (for its
    # state, not a row held), and whether a request refused behind it said so in the log.
    last_refusal: ApiError | None = None
    refusal_logged: bool = False


@dataclass
class ClientTurns:
    per_client: int
    wait_seconds: float
    _clients: dict[str, _Client] = field(default_factory=dict)

    async def start(self, client: str, gone: asyncio.Future[None] | None = None) -> None:
        """Return when `client` may run one more request (then `end` it); RateLimited when its
        turn does not come within `wait_seconds` (the database's refusal when the client's request
        that ended last was refused by it), ClientGone when `gone` is done first."""
        if self.take_if_free(client):
            return
        state = self._clients[client]
        ended_before = state.ended
        turn = asyncio.get_running_loop().create_future()
        state.waiting.append(turn)
        WAITING.inc()
        try:
            await asyncio.wait(
                {turn} if gone is None else {turn, gone},
                timeout=self.wait_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except asyncio.CancelledError:
            self._give_up(client, turn)
            raise
        finally:
            WAITING.dec()
        if turn.done():
            return
        self._give_up(client, turn)
        if gone is not None and gone.done():
            raise ClientGone
        if state.ended > ended_before and (refusal := state.last_refusal) is not None:
            if not state.refusal_logged:  # once, however many requests waited behind it
                state.refusal_logged = True
                log.warning(
                    "%s: requests waiting their turn behind a request the database refused are "
                    "refused too",
                    refusal.message,
                )
            raise type(refusal)(refusal.message)
        raise RateLimited(
            f"Too many requests in flight for this API key: {self.per_client} run at a "
            "time, the others wait their turn",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    def take_if_free(self, client: str) -> bool:
        """Take one of `client`'s turns if one is free and nobody waits for it."""
        state = self._clients.setdefault(client, _Client())
        if state.running < self.per_client and not state.waiting:
            state.running += 1
            return True
        return False

    def end(self, client: str, refusal: ApiError | None = None) -> None:
        """A request of `client` ended (`refusal`: refused by the database): its turn passes to
        the client's next waiting request."""
        state = self._clients[client]
        state.ended += 1
        state.last_refusal = (
            None if refusal is None or refusal.message == DATABASE_BUSY else refusal
        )
        state.refusal_logged = False
        self.pass_on(client)

    def pass_on(self, client: str) -> None:
        """One of `client`'s turns passes to its next waiting request, or is free; no request of
        it ended (an injected latency gives its turn back while it sleeps)."""
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
            self.pass_on(client)
            return
        turn.cancel()
        state = self._clients[client]
        state.waiting.remove(turn)


@dataclass
class Turn:
    """One request's turn. An injected latency gives it back while it sleeps and takes it again
    after (fault_middleware.py): it holds no connection, and a merchant testing its timeouts
    with more latency faults at once than its cap got 429s it never asked for."""

    turns: ClientTurns
    client: str
    held: bool = False
    refusal: ApiError | None = None  # the database's, of this request (note_database_refusal)

    async def take(self, gone: asyncio.Future[None] | None = None) -> None:
        await self.turns.start(self.client, gone)
        self.held = True

    def give_back(self) -> None:
        """For a while: the request goes on after (`take`)."""
        if self.held:
            self.held = False
            self.turns.pass_on(self.client)

    def finish(self) -> None:
        """The request ended."""
        if self.held:
            self.held = False
            self.turns.end(self.client, self.refusal)


def note_database_refusal(scope_state: Mapping[str, Any], refusal: ApiError) -> None:
    """The request was refused by the database: its client's requests whose turn does not come
    behind it are refused as it was (ClientTurns.start)."""
    turn = scope_state.get(TURN_STATE)
    if isinstance(turn, Turn):
        turn.refusal = refusal


class _ReadAhead:
    """The request's messages read while it waits its turn, to see its client go away (uvicorn
    says so only through receive), then replayed to the application in order. It stops reading
    ahead at a body that comes in parts: that one is read on in the request's turn."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._read: deque[Message] = deque()
        self._next: asyncio.Future[Message] | None = None
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def watch(self) -> None:
        """Until the client goes away (then `gone` is done) or the body comes in parts."""
        while True:
            self._next = asyncio.ensure_future(self._receive())
            try:
                # Shielded: the read outlives the watch, for the application to take over.
                message = await asyncio.shield(self._next)
            except Exception:  # the application's receive raises it again
                return
            self._next = None
            self._read.append(message)
            if message["type"] == "http.disconnect":
                self.gone.set_result(None)
                return
            if message.get("more_body", False):
                return

    async def receive(self) -> Message:
        if self._read:
            return self._read.popleft()
        if self._next is not None:
            pending, self._next = self._next, None
            return await pending
        return await self._receive()

    async def close(self) -> None:
        """The request ended: a read left pending ends before anyone reads again (the request
        log reads the rest of a refused call's body)."""
        pending, self._next = self._next, None
        if pending is not None:
            pending.cancel()
            await asyncio.wait({pending})
            if not pending.cancelled():
                pending.exception()  # retrieved: not logged as never retrieved


@dataclass(frozen=True)
class _NewKey:
    """An API key this process does not know yet, by its digest."""

    digest: str


class ClientTurnsMiddleware:
    """Runs each request under /api/ (the probes aside), and each dashboard page (its static
    files aside), in its client's turn."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        turns: ClientTurns,
        api_prefix: str,
        probes: frozenset[str],
        html_pages: HtmlPages | None = None,
        static_prefix: str = "/dashboard/static/",
    ) -> None:
        self.app = app
        self.turns = turns
        self.api_prefix = api_prefix
        self.probes = probes
        self.html_pages = html_pages
        self.static_prefix = static_prefix
        self._lookups: dict[str, asyncio.Task[Merchant | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        page = self._is_dashboard_page(scope)
        if not page and not is_api_call(scope, self.api_prefix, self.probes):
            await self.app(scope, receive, send)
            return
        client = self._known_client(scope, page)
        if isinstance(client, str) and self.turns.take_if_free(client):
            # Most requests: nothing to wait for, so nothing to read ahead.
            await self._run_in_turn(Turn(self.turns, client, held=True), scope, receive, send)
            return
        read_ahead = _ReadAhead(receive)
        try:
            turn = await self._wait_for_turn(scope, page, client, read_ahead, send)
            if turn is not None:
                await self._run_in_turn(turn, scope, read_ahead.receive, send)
        finally:
            await read_ahead.close()

    async def _run_in_turn(self, turn: Turn, scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"][TURN_STATE] = turn
        try:
            await self.app(scope, receive, send)
        finally:
            turn.finish()

    async def _wait_for_turn(
        self,
        scope: Scope,
        page: bool,
        client: str | _NewKey,
        read_ahead: _ReadAhead,
        send: Send,
    ) -> Turn | None:
        """The request's turn once it comes (a key new to the process looked up first); None
        when the request was answered meanwhile (429) or its client went away."""
        watching = asyncio.ensure_future(read_ahead.watch())
        try:
            if isinstance(client, _NewKey):
                client = await self._client_of_new_key(scope, client.digest, read_ahead.gone)
            turn = Turn(self.turns, client)
            await turn.take(read_ahead.gone)
            # Looked up as it came, up to a database timeout ago: the middlewares and the
            # endpoint look the key up again (its cache's 2 s hold from here). On the merchant
            # read then, a request ran for a key deactivated long before (API keys review).
            scope["state"].pop(KEY_MERCHANT, None)
            return turn
        except ClientGone:
            scope["state"].pop("merchant_id", None)  # nobody asks any more: not recorded
            return None
        except ApiError as refused:  # its turn did not come (RateLimited, or the database's)
            await self._refuse(scope, read_ahead.receive, send, page, refused)
            return None
        finally:
            watching.cancel()

    def _is_dashboard_page(self, scope: Scope) -> bool:
        if self.html_pages is None or scope["type"] != "http":
            return False
        path: str = scope["path"]
        return path.startswith(self.html_pages.prefix) and not path.startswith(self.static_prefix)

    def _known_client(self, scope: Scope, page: bool) -> str | _NewKey:
        """The merchant whose turns the request takes, else its address; or its API key's
        digest when this process does not know the key yet (_client_of_new_key)."""
        headers = Headers(scope=scope)
        if page:
            signed_in: SignedInMerchants = scope["app"].state.signed_in_merchants
            merchant_id = signed_in.merchant_of(headers)
            return _by_address(scope) if merchant_id is None else f"merchant:{merchant_id}"
        api_keys = headers.getlist(API_KEY_HEADER)
        if len(api_keys) != 1:  # none, or two: the endpoint's authentication answers
            return _by_address(scope)
        merchants: MerchantCache = scope["app"].state.merchants
        digest = hash_api_key(api_keys[0])
        merchant = merchants.get(digest)
        return _NewKey(digest) if merchant is None else _merchant_client(scope, merchant)

    async def _client_of_new_key(
        self, scope: Scope, digest: str, gone: asyncio.Future[None]
    ) -> str:
        """The key's merchant, looked up once however many of its requests arrive together, in
        its address's turn; else the address."""
        by_address = _by_address(scope)
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = asyncio.create_task(self._look_up(scope["app"].state, digest, by_address))
            self._lookups[digest] = lookup
            lookup.add_done_callback(_forgotten(self._lookups, digest))
        first: set[asyncio.Future[Any]] = {lookup, gone}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if not lookup.done():
            raise ClientGone
        failed = lookup.exception()
        if isinstance(failed, ApiError):  # each request raises its own
            raise type(failed)(failed.message, headers=failed.headers)
        if failed is not None:
            # A database error: the request goes on in its address's line, where the endpoint's
            # authentication meets it again and answers as it does.
            return by_address
        merchant = lookup.result()
        if merchant is None:
            scope["state"][KEY_MERCHANT] = None
            return by_address
        return _merchant_client(scope, merchant)

    async def _look_up(self, state: State, key_digest: str, by_address: str) -> Merchant | None:
        """In the address's turn: a burst of keys no merchant has holds its address's share of
        the connections, not the pool."""
        await self.turns.start(by_address)
        refusal = None
        try:
            return await merchant_of_key(state, key_digest)
        except Exception as error:
            refusal = database_refusal(error)
            raise
        finally:
            self.turns.end(by_address, refusal)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, page: bool, refused: ApiError
    ) -> None:
        if page and self.html_pages is not None:
            await self.html_pages.refusal(refused)(scope, receive, send)
            return
        await reject(send, scope["state"]["request_id"], refused)


def _by_address(scope: Scope) -> str:
    address = scope.get("client")
    return f"address:{address[0] if address else ''}"


def _merchant_client(scope: Scope, merchant: Merchant) -> str:
    scope["state"][KEY_MERCHANT] = merchant
    scope["state"]["merchant_id"] = merchant.id  # the request log's owner, a 429 too
    return f"merchant:{merchant.id}"


def _forgotten(
    lookups: dict[str, asyncio.Task[Merchant | None]], digest: str
) -> Callable[[asyncio.Task[Merchant | None]], None]:
    def forget(lookup: asyncio.Task[Merchant | None]) -> None:
        lookups.pop(digest, None)
        if not lookup.cancelled():
            lookup.exception()  # retrieved: every request that waited for it has seen it

    return forget
