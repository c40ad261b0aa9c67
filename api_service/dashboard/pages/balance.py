"""Balance and ledger: the balance (held, available), the history with running balances, a chart
of the balance over the latest movements, and the sandbox top-up (POST /api/v1/sandbox/top-up,
which also starts the QUEUED payouts the new balance covers)."""

from starlette.responses import Response

from api_service.dashboard.api_bridge import ApiAnswer
from api_service.dashboard.balance_chart import balance_chart, points_of
from api_service.dashboard.context import FormDep, MerchantPage, PageDep, redirect
from api_service.dashboard.routing import dashboard_router
from api_service.errors import SandboxDisabled
from contracts.domain.text import trimmed

router = dashboard_router()
PAGE_SIZE = 25
CHART_MOVEMENTS = 100  # the API's largest page
TOP_UP_PATH = "/dashboard/balance/top-up"
TOP_UP_OFFERED = "100000.00"  # the form's amount until the merchant sends one


async def _balance_page(
    page: MerchantPage, *, top_up: ApiAnswer | None = None, amount: str = TOP_UP_OFFERED
) -> Response:
    refused = top_up if top_up is not None and not top_up.ok else None
    history = (await page.api.balance_history(page=page.page_number, limit=PAGE_SIZE)).data
    last = max(history["pagination"]["totalPages"], 1)
    if page.page_number > last:  # past the end (an old link): the last page, not "99999 of 1"
        history = (await page.api.balance_history(page=last, limit=PAGE_SIZE)).data
    latest = (await page.api.balance_history(page=1, limit=CHART_MOVEMENTS)).data
    return page.render(
        "balance.html",
        active="balance",
        status_code=refused.status_code if refused else 200,
        balance=(await page.api.balance()).data,
        entries=history["entries"],
        pagination=history["pagination"],
        chart=balance_chart(points_of(latest["entries"])),
        chart_movements=CHART_MOVEMENTS,
        top_up_error=refused.field_errors.get("amount", refused.error_message) if refused else None,
        amount=amount,
    )


@router.get("/dashboard/balance")
async def show_balance(page: PageDep) -> Response:
    return await _balance_page(page)


@router.post(TOP_UP_PATH)
async def top_up_balance(form: FormDep) -> Response:
    if not form.settings.sandbox_enabled:
        raise SandboxDisabled
    amount = trimmed(await form.text("amount"))
    answer = await form.api.top_up(amount, await form.text("idempotency_key"))
    if answer.ok:
        return redirect("/dashboard/balance", done="topped-up")
    return await _balance_page(form, top_up=answer, amount=amount)
