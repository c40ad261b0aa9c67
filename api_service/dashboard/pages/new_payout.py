"""Create a payout from a form, the scenario table beside it. The form becomes the body of
POST /api/v1/payouts; the API's validation errors are shown on the fields they name."""

import secrets
from typing import Any

from starlette.responses import Response

from api_service.dashboard.api_bridge import ApiAnswer
from api_service.dashboard.context import FormDep, MerchantPage, PageDep, redirect
from api_service.dashboard.routing import dashboard_router
from api_service.dashboard.scenarios import ACCOUNT_PREFIXES, scenarios
from contracts.db.engine import utcnow
from contracts.domain.money import format_amount
from contracts.domain.scenarios import REVIEW_THRESHOLD
from contracts.domain.text import trimmed

router = dashboard_router()

# Form field -> the API's field.
FIELDS = {
    "merchant_reference": "merchantReference",
    "amount": "amount",
    "dest_type": "destType",
    "bank_code": "bankCode",
    "wallet_code": "walletCode",
    "account_number": "accountNumber",
    "account_title": "accountTitle",
    "purpose": "purpose",
    "queue_if_low_balance": "queueIfLowBalance",  # a checkbox: "true" when ticked
}


def new_reference() -> str:
    return f"PO-{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def payout_body(values: dict[str, str]) -> dict[str, Any]:
    """The API request of a filled form: blank fields left out (the API's defaults apply), and
    only the institution code of the destination type chosen."""
    body: dict[str, Any] = {FIELDS[name]: value for name, value in values.items() if trimmed(value)}
    body.pop("walletCode" if body.get("destType") == "BANK" else "bankCode", None)
    if body.pop("queueIfLowBalance", None):
        body["queueIfLowBalance"] = True
    return body


async def _form(
    page: MerchantPage,
    values: dict[str, str],
    *,
    answer: ApiAnswer | None = None,
) -> Response:
    directory = (await page.api.directory()).data
    errors = answer.field_errors if answer else {}
    return page.render(
        "new_payout.html",
        active="new",
        status_code=answer.status_code if answer else 200,
        values=values,
        errors=errors,
        error=answer.page_alert if answer else None,
        banks=[bank for bank in directory["banks"] if bank["isActive"]],
        wallets=[wallet for wallet in directory["wallets"] if wallet["isActive"]],
        scenarios=scenarios(sandbox=page.settings.sandbox_enabled),
        account_prefixes=ACCOUNT_PREFIXES,
        review_threshold=format_amount(REVIEW_THRESHOLD),
        queued_expiry_hours=f"{page.settings.queued_expiry_hours:g}",
    )


@router.get("/dashboard/payouts/new")
async def new_payout_form(page: PageDep) -> Response:
    values = {name: "" for name in FIELDS}
    values.update(merchant_reference=new_reference(), amount="1500.00", dest_type="WALLET")
    return await _form(page, values)


@router.post("/dashboard/payouts/new")
async def create_payout(form: FormDep) -> Response:
    values = {name: await form.text(name) for name in FIELDS}
    answer = await form.api.create_payout(payout_body(values), await form.text("idempotency_key"))
    if answer.ok:
        return redirect(f"/dashboard/payouts/{answer.data['id']}", done="created")
    return await _form(form, values, answer=answer)
