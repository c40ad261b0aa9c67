"""What a merchant page's handler gets: the REST API as the signed-in merchant, and the page
layout (navigation, the merchant's name, the CSRF token its forms carry)."""

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Depends, Request
from starlette.responses import HTMLResponse, RedirectResponse

from api_service.dashboard.api_bridge import MerchantApi
from api_service.dashboard.rendering import page
from api_service.dashboard.sessions import (
    CSRF_FIELD,
    CurrentMerchantSession,
    MerchantForm,
    MerchantSession,
)
from api_service.deps import SessionDep, SettingsDep
from api_service.pagination import STARTING_AFTER
from contracts.settings import Settings
from contracts.wire import whole_number

HOME = "/dashboard/payouts"  # the merchant's first page
MAX_CURSOR = 2**63 - 1  # a BIGINT id
# Messages a redirect after an action may show, by code (never text from the query string).
NOTICES = {
    "created": "Payout created.",
    "reinitiated": "Payout reinitiated: its funds are held again and it is PENDING.",
    "simulated": "Outcome accepted: the payout changes in a moment.",
    "resent": "Webhook resend queued.",
    "url-saved": "Webhook endpoint saved.",
    "test-sent": "Test payout created: its webhooks are on their way.",
    "topped-up": "Balance topped up.",
    "recovered": "{count} failed or parked deliveries queued again.",
    "redriven": "{count} dead-lettered messages moved back to their queue.",
    "faults-saved": "Fault setting saved: it hits that share of your API calls from now on.",
    "faults-stopped": "Fault setting removed: your API calls are answered normally.",
    "chaos-saved": "Webhook chaos saved: it takes effect within a couple of seconds.",
    "chaos-off": "Webhook chaos turned off: webhooks behave again.",
    "clock-advanced": "Clock advanced: {count} scheduled actions fell due.",
    "readiness-restarted": "Readiness restarted: the report counts what you do from now on.",
}


def notice_of(request: Request) -> str | None:
    """The notice a redirect asked for: a fixed text, with at most a number in it."""
    notice = NOTICES.get(request.query_params.get("done", ""))
    count = whole_number(request.query_params.get("count")) or 0
    return notice.format(count=count) if notice else None


@dataclass(frozen=True)
class MerchantPage:
    request: Request
    api: MerchantApi
    signed_in: MerchantSession
    settings: Settings

    def render(
        self, template: str, *, active: str, status_code: int = 200, **values: Any
    ) -> HTMLResponse:
        context = {
            "active": active,
            "merchant_name": self.signed_in.merchant.name,
            "csrf_field": CSRF_FIELD,
            "csrf_token": self.signed_in.csrf_token,
            "sandbox": self.settings.sandbox_enabled,
            "notice": notice_of(self.request),
            "error": None,
            **values,
        }
        return page(template, context, status_code)

    @property
    def starting_after(self) -> int | None:
        """The `startingAfter` of a list paged by a numeric cursor (a previous page's
        nextCursor), when it is one."""
        number = whole_number(self.request.query_params.get(STARTING_AFTER))
        return number if number and number <= MAX_CURSOR else None

    async def text(self, name: str) -> str:
        """A text field of the posted form ("" when absent)."""
        value = (await self.request.form()).get(name)
        return value if isinstance(value, str) else ""


def redirect(
    path: str, *, done: str | None = None, count: int | None = None, anchor: str = ""
) -> RedirectResponse:
    """After an action: Post/Redirect/Get, so a reload does not post again. The query `path`
    has (a list's filter and page) is kept, but for the notice of an earlier action."""
    target, _, kept = path.partition("?")
    pairs = [(name, value) for name, value in parse_qsl(kept) if name not in ("done", "count")]
    if done:
        pairs.append(("done", done))
        if count is not None:
            pairs.append(("count", str(count)))
    query = f"?{urlencode(pairs)}" if pairs else ""
    return RedirectResponse(f"{target}{query}{anchor}", status_code=303)


def back_to(candidate: object, default: str) -> str:
    """A return path a form named, if it is one of ours (never an open redirect)."""
    if (
        isinstance(candidate, str)
        and candidate.startswith("/dashboard/")
        and "//" not in candidate
        and "\\" not in candidate
        and all(32 < ord(char) < 127 for char in candidate)
    ):
        return candidate
    return default


def _merchant_page(
    request: Request, session: SessionDep, settings: Settings, signed_in: MerchantSession
) -> MerchantPage:
    api = MerchantApi(request, session, signed_in.merchant, seal_secret=signed_in.token)
    return MerchantPage(request, api, signed_in, settings)


async def merchant_page(
    request: Request, session: SessionDep, settings: SettingsDep, signed_in: CurrentMerchantSession
) -> MerchantPage:
    return _merchant_page(request, session, settings, signed_in)


async def merchant_form_page(
    request: Request, session: SessionDep, settings: SettingsDep, signed_in: MerchantForm
) -> MerchantPage:
    """A form post's page: its CSRF token checked first."""
    return _merchant_page(request, session, settings, signed_in)


PageDep = Annotated[MerchantPage, Depends(merchant_page)]
FormDep = Annotated[MerchantPage, Depends(merchant_form_page)]
