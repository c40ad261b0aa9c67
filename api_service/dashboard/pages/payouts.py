"""Payouts: the list (the API's filters, keyset pages, statuses refreshed live), a payout's page
with its timeline (refreshed live), and the actions on a payout (simulate, reinitiate)."""

import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from starlette.responses import JSONResponse, Response

from api_service.dashboard.api_bridge import ApiAnswer
from api_service.dashboard.context import FormDep, MerchantPage, PageDep, redirect
from api_service.dashboard.routing import dashboard_router
from api_service.dashboard.timeline import payout_timeline
from api_service.errors import SandboxDisabled, ValidationFailed
from api_service.payouts.schemas import MERCHANT_REFERENCE_MAX_LENGTH
from api_service.schemas import PayoutIdPath
from contracts.domain.statuses import PayoutStatus, PspOutcome, psp_outcome_allowed
from contracts.domain.text import trimmed

router = dashboard_router()
PAGE_SIZE = 25


@dataclass(frozen=True)
class PayoutFilters:
    """The list's filters as the page's query string carries them (text, as typed)."""

    status: str = ""
    created_from: str = ""
    created_to: str = ""
    reference: str = ""

    @classmethod
    def of(cls, request: Request) -> "PayoutFilters":
        query = request.query_params
        return cls(
            status=query.get("status", ""),
            created_from=query.get("from", ""),
            created_to=query.get("to", ""),
            reference=trimmed(query.get("reference", "")),
        )

    def query(self, **extra: str) -> str:
        names = {"status": "status", "created_from": "from", "created_to": "to"}
        pairs = {names.get(key, key): value for key, value in asdict(self).items()}
        return urlencode({key: value for key, value in {**pairs, **extra}.items() if value})

    def api_arguments(self) -> dict[str, Any]:
        """The list endpoint's filters; ValidationFailed naming the field otherwise."""
        try:
            status = PayoutStatus(self.status) if self.status else None
        except ValueError as exc:
            raise ValidationFailed.on("status", "is not a payout status") from exc
        if len(self.reference) > MERCHANT_REFERENCE_MAX_LENGTH:  # as the API's query refuses it
            raise ValidationFailed.on(
                "reference", f"must be at most {MERCHANT_REFERENCE_MAX_LENGTH} characters"
            )
        created_from = _day(self.created_from, "from", time.min)
        created_to = _day(self.created_to, "to", time.max)
        if created_from and created_to and created_from > created_to:  # as the API refuses it
            raise ValidationFailed.on("from", "must be on or before Created to")
        return {
            "status": status,
            "created_from": created_from,
            "created_to": created_to,
            "merchant_reference": self.reference or None,
        }


def _day(text: str, field: str, at: time) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.combine(date.fromisoformat(text), at, UTC)
    except ValueError as exc:
        raise ValidationFailed.on(field, "must be a date such as 2026-01-31") from exc


@router.get("/dashboard/payouts")
async def list_payouts(request: Request, page: PageDep) -> Response:
    filters = PayoutFilters.of(request)
    after = request.query_params.get("after")
    form: dict[str, Any] = {
        "filters": filters,
        "statuses": [status.value for status in PayoutStatus],
    }
    try:
        arguments = filters.api_arguments()
    except ValidationFailed as refused:  # the filter form again, the refusal on its fields
        errors = {detail["field"]: detail["message"] for detail in refused.details or []}
        return page.render(
            "payouts.html",
            active="payouts",
            status_code=refused.status_code,
            filter_errors=errors,
            **form,
        )
    listing = (
        await page.api.payouts(**arguments, starting_after=after or None, limit=PAGE_SIZE)
    ).data
    older = listing["pagination"]["nextCursor"]
    return page.render(
        "payouts.html",
        active="payouts",
        filter_errors={},
        payouts=listing["payouts"],
        filtered=bool(after) or any(value is not None for value in arguments.values()),
        total=listing["pagination"].get("total"),
        older_link=f"?{filters.query(after=older)}" if older else None,
        newest_link=f"?{filters.query()}" if after else None,
        **form,
    )


def _payout_ids(texts: list[str]) -> list[str]:
    """The payout ids among `texts` (canonical), as many as a list page shows at most."""
    ids: list[str] = []
    for text in texts[:PAGE_SIZE]:
        try:
            ids.append(str(uuid.UUID(text)))
        except ValueError:
            continue
    return ids


@router.get("/dashboard/payouts/live")
async def live_statuses(request: Request, page: PageDep) -> Response:
    """The statuses of the payouts a list page shows, asked by their ids (`id`, repeated): a
    payout that has left the list's status filter still shows where it went. Polled."""
    statuses: dict[str, str] = {}
    for payout_id in _payout_ids(request.query_params.getlist("id")):
        answer = await page.api.payout(payout_id)
        if answer.ok:
            statuses[payout_id] = answer.data["status"]
    return JSONResponse({"statuses": statuses})


def simulated_outcomes(payout: dict[str, Any]) -> list[str]:
    """What the sandbox may settle a waiting payout (or reverse a paid one) to."""
    status = PayoutStatus(payout["status"])
    waiting = status in (PayoutStatus.ON_HOLD, PayoutStatus.IN_REVIEW, PayoutStatus.SUCCESS) or (
        status is PayoutStatus.PENDING and payout["pspReference"]
    )
    if not waiting:
        return []
    return [outcome.value for outcome in PspOutcome if psp_outcome_allowed(status, outcome)]


async def _timeline_context(page: MerchantPage, payout_id: str) -> dict[str, Any]:
    timeline = await payout_timeline(page.api, payout_id)
    return {
        "timeline": timeline,
        "payout": timeline.payout,
        "outcomes": simulated_outcomes(timeline.payout) if page.settings.sandbox_enabled else [],
        "return_to": f"/dashboard/payouts/{payout_id}",
    }


@router.get("/dashboard/payouts/{payout_id}")
async def show_payout(payout_id: PayoutIdPath, page: PageDep) -> Response:
    return page.render("payout.html", active="payouts", **await _timeline_context(page, payout_id))


@router.get("/dashboard/payouts/{payout_id}/timeline")
async def payout_timeline_fragment(payout_id: PayoutIdPath, page: PageDep) -> Response:
    """The payout page's live part, polled while anything may still change."""
    context = await _timeline_context(page, payout_id)
    return page.render("payout_live.html", active="payouts", **context)


async def _after_action(
    page: MerchantPage, payout_id: str, answer: ApiAnswer, done: str
) -> Response:
    """Back to the payout: with a notice, or with the API's refusal above the timeline."""
    if answer.ok:
        return redirect(f"/dashboard/payouts/{payout_id}", done=done)
    context = await _timeline_context(page, payout_id)
    return page.render(
        "payout.html",
        active="payouts",
        status_code=answer.status_code,
        error=answer.error_message,
        **context,
    )


@router.post("/dashboard/payouts/{payout_id}/reinitiate")
async def reinitiate(payout_id: PayoutIdPath, form: FormDep) -> Response:
    answer = await form.api.reinitiate(payout_id, await form.text("idempotency_key"))
    return await _after_action(form, payout_id, answer, "reinitiated")


@router.post("/dashboard/payouts/{payout_id}/simulate")
async def simulate(payout_id: PayoutIdPath, form: FormDep) -> Response:
    if not form.settings.sandbox_enabled:
        raise SandboxDisabled
    answer = await form.api.simulate(
        payout_id, await form.text("outcome"), await form.text("idempotency_key")
    )
    return await _after_action(form, payout_id, answer, "simulated")
