"""The dashboard's calls of the REST API: in-process, as the signed-in merchant.

Every dashboard action runs the REST endpoint function that does the same thing, given the JSON
body the API documents and the idempotency key the form carried: the same validation, the same
idempotency (a double submit replays the first answer; the key is stored under the API's path),
the same events, the same answer. Reads go through the same endpoints, so a page shows exactly
what `GET /api/v1/...` answers, scoped to the merchant the same way (another merchant's object
is a 404). There is no second implementation of anything here: only the translation of a form
into the API request it stands for.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from api_service.balance import endpoints as balance
from api_service.balance import top_up as sandbox_top_up
from api_service.deps import get_public_ids
from api_service.directory import endpoints as directory
from api_service.envelope import error_body
from api_service.errors import ApiError
from api_service.idempotency import REPLAYED_HEADER, Idempotency, get_idempotency
from api_service.payouts import endpoints as payouts
from api_service.psp import endpoints as psp
from api_service.request_log import endpoints as request_log
from api_service.sandbox import clock as sandbox_clock
from api_service.sandbox import endpoints as sandbox
from api_service.webhooks import endpoints as webhooks
from contracts.db.engine import transaction
from contracts.db.models import WITH_WEBHOOK_SECRETS, IdempotencyKey, Merchant
from contracts.domain.statuses import PayoutStatus
from contracts.public_ids import PublicIds
from contracts.settings import Settings
from contracts.webhooks import DeliveryStatus

API = "/api/v1"


class ApiRefusal(Exception):
    """The API refused a read the page cannot do without (a 404 for another merchant's id)."""

    def __init__(self, answer: "ApiAnswer") -> None:
        super().__init__(answer.error_message)
        self.answer = answer


@dataclass(frozen=True)
class ApiAnswer:
    """An answer of the API: its status and its `{success, data}` / `{success, error}` body."""

    status_code: int
    envelope: dict[str, Any]
    replayed: bool = False  # the answer stored under the idempotency key, sent again

    @classmethod
    def of(cls, response: Response) -> "ApiAnswer":
        replayed = REPLAYED_HEADER in response.headers
        return cls(response.status_code, orjson.loads(bytes(response.body)), replayed)

    @classmethod
    def refused(cls, error: ApiError, request_id: str) -> "ApiAnswer":
        body = error_body(error.code, error.message, request_id, error.details)
        return cls(error.status_code, orjson.loads(body))

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def data(self) -> Any:
        """The answer's data; ApiRefusal (rendered as an error page) when it is an error."""
        if not self.ok:
            raise ApiRefusal(self)
        return self.envelope["data"]

    @property
    def message(self) -> str:
        return str(self.envelope.get("message") or "")

    @property
    def error_code(self) -> str:
        return str(self.envelope.get("error", {}).get("code", ""))

    @property
    def error_message(self) -> str:
        return str(self.envelope.get("error", {}).get("message", ""))

    @property
    def page_alert(self) -> str:
        """The alert above a refused form. The API's message names fields as the API spells them
        ("Invalid request: delaySeconds"); the form says each error next to its label."""
        if not self.field_errors:
            return self.error_message
        if len(self.field_errors) == 1:
            return "Not accepted: the field marked below says why."
        return "Not accepted: the fields marked below say why."

    @property
    def field_errors(self) -> dict[str, str]:
        """The first message per field the API named (`details`)."""
        errors: dict[str, str] = {}
        for detail in self.envelope.get("error", {}).get("details") or []:
            errors.setdefault(str(detail.get("field")), str(detail.get("message")))
        return errors


Call = Callable[[Request, Idempotency], Awaitable[Response]]


@dataclass(frozen=True)
class MerchantApi:
    """The REST API as the signed-in merchant, within the dashboard request's session."""

    request: Request  # the dashboard's request
    session: AsyncSession
    merchant: Merchant
    # Seals stored answers that carry a secret (rotate-secret), as the API key does for the API:
    # the session's token, which the database holds only as a digest.
    seal_secret: str

    @property
    def settings(self) -> Settings:
        settings: Settings = self.request.app.state.settings
        return settings

    @property
    def request_id(self) -> str:
        return str(self.request.state.request_id)

    async def merchant_with_secrets(self) -> Merchant:
        """The signed-in merchant with its webhook secrets, read for the pages that show or
        sign with them: loaded with every page, a secret no key opened failed them all."""
        merchant = await self.session.get(
            Merchant, self.merchant.id, options=[WITH_WEBHOOK_SECRETS], populate_existing=True
        )
        assert merchant is not None, "merchants are never deleted"
        return merchant

    async def public_ids(self) -> PublicIds:
        return await get_public_ids(self.request, self.session)

    def api_request(self, method: str, path: str, body: Any = None) -> Request:
        """The request the API would receive for this action (JSON body, this request's id)."""
        raw = b"" if body is None else orjson.dumps(body)
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "scheme": self.request.url.scheme,
            "server": self.request.scope.get("server"),
            "client": self.request.scope.get("client"),
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
            ],
            "app": self.request.app,
            "state": {"request_id": self.request_id},
        }

        async def receive() -> Message:
            return {"type": "http.request", "body": raw, "more_body": False}

        return Request(scope, receive)

    async def answer(self, call: Awaitable[Response]) -> ApiAnswer:
        """What the endpoint answers, a refusal raised outside its idempotency included."""
        try:
            return ApiAnswer.of(await call)
        except ApiError as error:
            return ApiAnswer.refused(error, self.request_id)

    async def idempotent(
        self, path: str, body: Any, idempotency_key: str, call: Call, *, method: str = "POST"
    ) -> ApiAnswer:
        request = self.api_request(method, path, body)

        async def run(key: str) -> Response:
            idempotency = await get_idempotency(
                request,
                merchant=self.merchant,
                api_key=self.seal_secret,
                settings=self.settings,
                sessions=self.request.app.state.sessions,
                key=key,
            )
            return await call(request, idempotency)

        answer = await self.answer(run(idempotency_key))
        if answer.replayed and not answer.ok:
            # A refusal wrote nothing, and what it depended on may have changed since (a top-up,
            # a webhook URL set) while the form's key did not: an action's key is derived from
            # the version of the thing it acts on (rendering.action_key). The click is judged
            # anew under the same key, so a double submit of it still replays its answer.
            await self._forget_refusal(idempotency_key)
            answer = await self.answer(run(idempotency_key))
        return answer

    async def _forget_refusal(self, idempotency_key: str) -> None:
        async with transaction(self.request.app.state.sessions) as session:
            await session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.merchant_id == self.merchant.id,
                    IdempotencyKey.key == idempotency_key,
                    IdempotencyKey.status_code >= 400,
                )
            )

    # Reads

    async def payouts(
        self,
        *,
        status: PayoutStatus | None,
        created_from: datetime | None,
        created_to: datetime | None,
        merchant_reference: str | None,
        starting_after: str | None,
        limit: int,
    ) -> ApiAnswer:
        return await self.answer(
            payouts.list_payouts(
                self.merchant,
                self.session,
                page=None,
                limit=limit,
                starting_after=starting_after,
                status=status,
                created_from=created_from,
                created_to=created_to,
                merchant_reference=merchant_reference,
            )
        )

    async def payout(self, payout_id: str) -> ApiAnswer:
        return await self.answer(payouts.get_payout(self.merchant, payout_id, self.session))

    async def events(self, *, payout_id: str, limit: int = 100) -> ApiAnswer:
        return await self.answer(
            webhooks.list_events(
                self.merchant, self.session, 1, limit, payout_id=payout_id, event_type=None
            )
        )

    async def deliveries(
        self,
        *,
        payout_id: str | None = None,
        status: DeliveryStatus | None = None,
        starting_after: str | None = None,
        limit: int = 100,
    ) -> ApiAnswer:
        return await self.answer(
            webhooks.list_deliveries(
                self.merchant,
                self.session,
                None,
                limit,
                event_id=None,
                payout_id=payout_id,
                status=status,
                starting_after=starting_after,
            )
        )

    async def balance(self) -> ApiAnswer:
        return await self.answer(balance.get_balance(self.merchant, self.session))

    async def balance_history(
        self, *, page: int | None = None, starting_after: int | None = None, limit: int
    ) -> ApiAnswer:
        return await self.answer(
            balance.get_balance_history(
                self.merchant, self.session, await self.public_ids(), page, limit, starting_after
            )
        )

    async def directory(self) -> ApiAnswer:
        return await self.answer(directory.get_directory(self.merchant, self.session))

    async def webhook_endpoint(self) -> ApiAnswer:
        return await self.answer(webhooks.get_endpoint(self.merchant, self.session))

    # Reads of the sandbox controls (the callers check that sandbox controls are on, as the
    # endpoints' routers do)

    async def readiness(self) -> ApiAnswer:
        return await self.answer(sandbox.get_readiness(self.merchant, self.session))

    async def faults(self) -> ApiAnswer:
        return await self.answer(sandbox.get_faults(self.merchant, self.session))

    async def webhook_chaos(self) -> ApiAnswer:
        return await self.answer(sandbox.get_webhook_chaos(self.merchant, self.session))

    async def clock(self) -> ApiAnswer:
        return await self.answer(
            sandbox_clock.get_clock(self.merchant, self.session, await self.public_ids())
        )

    async def requests(self, *, starting_after: int | None, limit: int) -> ApiAnswer:
        return await self.answer(
            request_log.list_requests(
                self.merchant,
                self.session,
                await self.public_ids(),
                limit=limit,
                starting_after=starting_after,
            )
        )

    # Actions

    async def create_payout(self, body: dict[str, Any], idempotency_key: str) -> ApiAnswer:
        async def call(request: Request, idempotency: Idempotency) -> Response:
            return await payouts.create_payout(
                request, self.merchant, idempotency, self.session, self.request_id, self.settings
            )

        return await self.idempotent(f"{API}/payouts", body, idempotency_key, call)

    async def create_payout_batch(self, items: list[Any], idempotency_key: str) -> ApiAnswer:
        async def call(request: Request, idempotency: Idempotency) -> Response:
            return await payouts.create_payout_batch(
                request, self.merchant, idempotency, self.session, self.request_id, self.settings
            )

        body = {"payouts": items}
        return await self.idempotent(f"{API}/payouts/batch", body, idempotency_key, call)

    async def reinitiate(self, payout_id: str, idempotency_key: str) -> ApiAnswer:
        async def call(request: Request, idempotency: Idempotency) -> Response:
            return await payouts.reinitiate_payout(
                request, self.merchant, payout_id, idempotency, self.session, self.request_id
            )

        path = f"{API}/payouts/{payout_id}/reinitiate"
        return await self.idempotent(path, None, idempotency_key, call)

    async def simulate(self, payout_id: str, outcome: str, idempotency_key: str) -> ApiAnswer:
        async def call(request: Request, idempotency: Idempotency) -> Response:
            return await psp.simulate_outcome(
                request,
                self.merchant,
                payout_id,
                idempotency,
                self.session,
                self.settings,
                self.request_id,
            )

        path = f"{API}/sandbox/payouts/{payout_id}/simulate"
        return await self.idempotent(path, {"outcome": outcome}, idempotency_key, call)

    async def resend(self, delivery_id: str, idempotency_key: str) -> ApiAnswer:
        async def call(request: Request, idempotency: Idempotency) -> Response:
            return await webhooks.resend_delivery(
                request, self.merchant, delivery_id, idempotency, self.session, self.request_id
            )

        path = f"{API}/webhooks/deliveries/{delivery_id}/resend"
        return await self.idempotent(path, None, idempotency_key, call)

    async def top_up(self, amount: str, idempotency_key: str) -> ApiAnswer:
        """POST /sandbox/top-up (the caller checks that sandbox controls are on, as the
        endpoint's router does)."""

        async def call(request: Request, idempotency: Idempotency) -> Response:
            return await sandbox_top_up.top_up(
                request, self.merchant, idempotency, self.session, self.request_id
            )

        path = f"{API}/sandbox/top-up"
        return await self.idempotent(path, {"amount": amount}, idempotency_key, call)

    async def set_webhook_url(self, url: str | None) -> ApiAnswer:
        """PUT /webhook-endpoint: not idempotent by key in the API either (a PUT)."""
        request = self.api_request("PUT", f"{API}/webhook-endpoint", {"url": url})
        return await self.answer(
            webhooks.put_endpoint(request, self.merchant, self.session, self.settings)
        )

    async def rotate_secret(self, idempotency_key: str) -> ApiAnswer:
        async def call(request: Request, idempotency: Idempotency) -> Response:
            return await webhooks.rotate_secret(
                request, self.merchant, idempotency, self.session, self.settings
            )

        path = f"{API}/webhook-endpoint/rotate-secret"
        return await self.idempotent(path, None, idempotency_key, call)

    async def restart_readiness(self, idempotency_key: str) -> ApiAnswer:
        """POST /sandbox/readiness/restart (the caller checks that sandbox controls are on)."""

        async def call(request: Request, idempotency: Idempotency) -> Response:
            return await sandbox.restart_readiness(
                request, self.merchant, idempotency, self.session
            )

        path = f"{API}/sandbox/readiness/restart"
        return await self.idempotent(path, None, idempotency_key, call)

    # Sandbox controls (the callers check that they are on). PUT and DELETE take no
    # idempotency key in the API either: saving the same setting twice is the same setting.

    async def set_faults(self, body: dict[str, Any]) -> ApiAnswer:
        request = self.api_request("PUT", f"{API}/sandbox/faults", body)
        return await self.answer(sandbox.put_faults(request, self.merchant, self.session))

    async def clear_faults(self) -> ApiAnswer:
        request = self.api_request("DELETE", f"{API}/sandbox/faults")
        return await self.answer(sandbox.delete_faults(request, self.merchant, self.session))

    async def set_webhook_chaos(self, body: dict[str, Any]) -> ApiAnswer:
        request = self.api_request("PUT", f"{API}/sandbox/webhook-chaos", body)
        return await self.answer(sandbox.put_webhook_chaos(request, self.merchant, self.session))

    async def clear_webhook_chaos(self) -> ApiAnswer:
        return await self.answer(sandbox.delete_webhook_chaos(self.merchant, self.session))

    async def advance_clock(self, body: dict[str, Any], idempotency_key: str) -> ApiAnswer:
        """POST /sandbox/clock/advance: waits, like the API, until what fell due has run."""

        async def call(request: Request, idempotency: Idempotency) -> Response:
            return await sandbox_clock.advance_clock(
                request,
                self.merchant,
                idempotency,
                self.session,
                self.settings,
                self.request_id,
                await self.public_ids(),
            )

        path = f"{API}/sandbox/clock/advance"
        return await self.idempotent(path, body, idempotency_key, call)
