"""Injecting the faults a merchant asked for (api_service.sandbox.faults) into their API calls.

The fault comes from the call's `X-Sandbox-Fault` header, or else from the merchant's
merchant-wide setting (on a share of calls; never on the sandbox controls themselves, so a
merchant can always switch it off). The merchant of the call's key is looked up here, before
the endpoint runs, because an injected status must leave nothing written. Only a merchant's
call gets a fault: a call without a known key goes on to the endpoint, whose authentication
answers it (401) as it would without the header. In production (`PAYOUTS_ENV=production`) a
call carrying the header is refused with 404 and nothing else happens here.
"""

import asyncio
import contextlib

from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_service.client_turns import TURN_STATE, Turn
from api_service.deps import API_KEY_HEADER, KEY_MERCHANT, count_in_request_rate, merchant_of_key
from api_service.errors import (
    INJECTED_STATUS_ERRORS,
    ApiError,
    GatewayTimeout,
    RateLimited,
    SandboxDisabled,
    ValidationFailed,
    database_refusal,
)
from api_service.exception_handlers import record_database_refusal
from api_service.metrics import INJECTED_FAULTS
from api_service.middleware import BodyTooLarge, is_api_call, reject
from api_service.sandbox.fault_settings import FaultShares
from api_service.sandbox.faults import FAULT_HEADER, LOST_STATUS, Fault, FaultKind, parse_fault
from contracts.api_keys import hash_api_key
from contracts.db.models import Merchant


class FaultInjectionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        enabled: bool,
        api_prefix: str,
        exempt_prefixes: tuple[str, ...],
        probes: frozenset[str],
    ) -> None:
        """`exempt_prefixes`: the paths a merchant-wide fault never touches (the sandbox
        controls, and the request log that shows what the faults did); `probes`: the paths no
        fault touches, not even X-Sandbox-Fault (liveness and readiness)."""
        self.app = app
        self.enabled = enabled
        self.api_prefix = api_prefix
        self.exempt_prefixes = exempt_prefixes
        self.probes = probes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_api_call(scope, self.api_prefix, self.probes):
            await self.app(scope, receive, send)
            return
        # The first of a fault header sent twice, as the endpoints read a header.
        headers = Headers(scope=scope)
        request_id: str = scope["state"]["request_id"]
        spec = headers.get(FAULT_HEADER)
        if spec is not None and not self.enabled:
            await reject(send, request_id, SandboxDisabled())
            return
        try:
            fault = await self._fault_of(scope, headers, spec)
        except (ValidationFailed, RateLimited) as refused:
            await reject(send, request_id, refused)
            return
        except SQLAlchemyError as error:
            # Out here the API's error handlers do not run: answer, and log, as they would (it
            # was answered unlogged: 503s in the metrics and no line of them: truth review).
            refusal = database_refusal(error)
            if refusal is None:
                raise
            record_database_refusal(scope["state"], refusal, error, {"request_id": request_id})
            await reject(send, request_id, refusal)
            return
        if fault is None:
            await self.app(scope, receive, send)
            return
        scope["state"]["fault"] = fault.label
        source = "header" if spec is not None else "setting"
        INJECTED_FAULTS.labels(fault.metric_label, source).inc()
        await self._inject(fault, scope, receive, send, request_id)

    async def _fault_of(self, scope: Scope, headers: Headers, spec: str | None) -> Fault | None:
        """The call's fault, None without a merchant; the merchant is noted for the request log."""
        if not self.enabled:
            return None
        state = scope["app"].state
        merchant = await self._merchant_of(scope, headers)
        if merchant is None:  # the endpoint's authentication answers, fault or no fault
            return None
        scope["state"]["merchant_id"] = merchant.id
        if spec is not None:
            # A faulted call is a call: it was answered (a 500, a 400 for the header) without
            # ever reaching the endpoint that counts the merchant's requests per second.
            await count_in_request_rate(scope, merchant.id)
            # Only the header's own ValueError names it: any other (a merchant's secret that no
            # key opens) blamed a header the client never sent (secrets review).
            try:
                return parse_fault(spec)
            except ValueError as invalid:
                raise ValidationFailed.on(FAULT_HEADER, str(invalid)) from invalid
        if scope["path"].startswith(self.exempt_prefixes):
            return None
        fault_shares: FaultShares = state.fault_shares
        share = await fault_shares.of(merchant.id)
        if share is None or not share.strikes():
            return None
        await count_in_request_rate(scope, merchant.id)
        return share.fault

    @staticmethod
    async def _merchant_of(scope: Scope, headers: Headers) -> Merchant | None:
        """The merchant of the call's key, as the client's turns found it; looked up here when
        they could not (the database failed them: it answers here too)."""
        if KEY_MERCHANT in scope["state"]:
            known: Merchant | None = scope["state"][KEY_MERCHANT]
            return known
        api_keys = headers.getlist(API_KEY_HEADER)
        # None or two keys: the endpoint's authentication answers (deps.get_current_merchant).
        if len(api_keys) != 1:
            return None
        return await merchant_of_key(scope["app"].state, hash_api_key(api_keys[0]))

    async def _inject(
        self, fault: Fault, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        match fault.kind:
            case FaultKind.LATENCY:
                try:
                    await _sleep_out_of_turn(fault, scope)
                except ApiError as refused:  # its turn did not come again (client_turns.py)
                    await reject(send, request_id, refused)
                    return
                await self.app(scope, receive, send)
            case FaultKind.STATUS:
                await _read_body(receive)
                error = INJECTED_STATUS_ERRORS[fault.value or 500]
                retry_after = fault.retry_after_seconds
                headers = {"Retry-After": str(retry_after)} if retry_after else None
                await reject(
                    send, request_id, error(f"Injected fault: {fault.label}", headers=headers)
                )
            case FaultKind.DROP_CONNECTION:
                # Headers promising a body that never comes: the server closes the connection
                # (uvicorn logs "returned without completing response"), the client sees it drop.
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-length", b"1")],
                    }
                )
            case FaultKind.TIMEOUT_AFTER_COMMIT:
                await self.app(scope, receive, _lost_answer(scope))
                await reject(send, request_id, GatewayTimeout())


async def _sleep_out_of_turn(fault: Fault, scope: Scope) -> None:
    """The latency, with the client's turn given back meanwhile (client_turns.Turn): a sleeping
    call holds no connection, and must not make the merchant's other calls wait (nor get 429s
    they never asked for). Its turn taken again, it runs as any other call."""
    turn: Turn | None = scope["state"].get(TURN_STATE)
    if turn is not None:
        turn.give_back()
    await asyncio.sleep((fault.value or 0) / 1000)
    if turn is not None:
        await turn.take()


async def _read_body(receive: Receive) -> None:
    """Read the request's body (RequestContextMiddleware bounds it), so that the request log keeps
    it although no endpoint runs: the readiness report tells a call's retry by its body."""
    with contextlib.suppress(BodyTooLarge):
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


def _lost_answer(scope: Scope) -> Send:
    """Where the answer of a call goes when it is lost on the way back. Its status is noted for
    the request log: a refused call wrote nothing, so its retry is no evidence for the readiness
    report."""

    async def lost(message: Message) -> None:
        if message["type"] == "http.response.start":
            scope["state"][LOST_STATUS] = message["status"]

    return lost
