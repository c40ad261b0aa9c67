"""Balance and ledger: the balance (held, available), the history with running balances, a chart
of the balance over the latest movements, and the sandbox top-up (POST /api/v1/sandbox/top-up,
which also starts the QUEUED payouts the new balance covers)."""

from typing import Any

from starlette.responses import Response

from api_service.dashboard.api_bridge import ApiAnswer
from api_service.dashboard.balance_chart import balance_chart, points_of
from api_service.dashboard.context import FormDep, MerchantPage, PageDep, redirect
from api_service.dashboard.routing import dashboard_router
from api_service.errors import SandboxDisabled
from api_service.pagination import STARTING_AFTER
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
    latest = (await page.api.balance_history(page=1, limit=CHART_MOVEMENTS)).data
    entries, older = await _history(page, latest["entries"])
    return page.render(
        "balance.html",
        active="balance",
        status_code=refused.status_code if refused else 200,
        balance=(await page.api.balance()).data,
        entries=entries,
        older_link=f"?{STARTING_AFTER}={older}" if older is not None else None,
        newest_link="/dashboard/balance" if page.starting_after is not None else None,
        chart=balance_chart(points_of(latest["entries"])),
        chart_movements=CHART_MOVEMENTS,
        top_up_error=refused.field_errors.get("amount", refused.error_message) if refused else None,
        amount=amount,
    )


async def _history(page: MerchantPage, latest: list[dict[str, Any]]) -> tuple[list[Any], Any]:
    """The ledger lines the page shows, and the cursor of the older ones, if any. By cursor, as
    the payouts page: a page number skipped every line before it with an OFFSET and counted
    them all, twice a view (2.6 s at page 9,999 of 385,000 lines: scale review). The newest
    page is the chart's newest lines; a cursor that names no line of the merchant's (an odd
    link), the newest page too."""
    if page.starting_after is not None:
        answer = await page.api.balance_history(starting_after=page.starting_after, limit=PAGE_SIZE)
        if answer.ok:
            return answer.data["entries"], answer.data["pagination"]["nextCursor"]
    newest = latest[:PAGE_SIZE]
    return newest, newest[-1]["id"] if len(latest) > PAGE_SIZE else None


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
