"""Sandbox controls: the merchant-wide fault (GET/PUT/DELETE /sandbox/faults), webhook chaos
(GET/PUT/DELETE /sandbox/webhook-chaos), the sandbox clock (GET /sandbox/clock, POST
/sandbox/clock/advance) and the request log (GET /requests, keyset pages). Every form becomes the
JSON body the API documents; the API's validation errors are shown on the fields they name."""

import re
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from api_service.dashboard.api_bridge import ApiAnswer, ApiRefusal
from api_service.dashboard.context import FormDep, MerchantPage, PageDep, redirect
from api_service.dashboard.routing import dashboard_router
from api_service.errors import SandboxDisabled
from api_service.sandbox.clock import MAX_ADVANCE_SECONDS
from api_service.sandbox.faults import FAULT_RULE
from contracts.domain.text import trimmed
from contracts.webhook_chaos import MAX_CHAOS_DELAY_SECONDS, MAX_INJECTED_FAILURES

router = dashboard_router()
SANDBOX = "/dashboard/sandbox"
REQUESTS_SHOWN = 50
# ASCII digits, as the API reads a number: `\d` took Arabic-Indic digits (U+0661 U+0660) for 10.
WHOLE_NUMBER = re.compile(r"-?[0-9]{1,12}")

FAULT_PRESETS = (
    ("status=503", "503 Service Unavailable, Retry-After: 2"),
    ("status=429", "429 Too Many Requests, Retry-After: 2"),
    ("status=500", "500 Internal Server Error"),
    ("timeout-after-commit", "the work is committed, the answer lost (504)"),
    ("drop-connection", "the connection closed unanswered"),
    ("latency=2000", "2 s late, then answered"),
)
ADVANCE_PRESETS = ((3600, "1 h"), (86400, "1 day"), (176400, "49 h"))
# Form field (snake_case) -> the API's field, for the chaos form.
CHAOS_NUMBERS = {
    "duplicate_percent": "duplicatePercent",
    "delay_seconds": "delaySeconds",
    "stale_timestamp_percent": "staleTimestampPercent",
    "fail_first_attempts": "failFirstAttempts",
}
CHAOS_FLAGS = {"out_of_order": "outOfOrder", "old_secret_only": "oldSecretOnly"}


def number(text: str) -> int | str:
    """A form's number as the JSON number it stands for; anything else is sent as typed, for the
    API to name what is wrong with it."""
    text = trimmed(text)
    return int(text) if WHOLE_NUMBER.fullmatch(text) else text


def duration(seconds: int) -> str:
    """176400 -> '2 d 1 h'; 90 -> '1 min 30 s'; 0 -> '0 s'."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts[:2]) or "0 s"


@dataclass
class Forms:
    """What a re-rendered form shows: the values sent and the API's refusal of them."""

    fault: dict[str, str] | None = None
    fault_errors: dict[str, str] = field(default_factory=dict)
    chaos: dict[str, Any] | None = None
    chaos_errors: dict[str, str] = field(default_factory=dict)
    seconds: str = ""
    clock_errors: dict[str, str] = field(default_factory=dict)
    refused: ApiAnswer | None = None


def _errors(answer: ApiAnswer, default_field: str) -> dict[str, str]:
    """The API's errors by field; a refusal naming none is put on `default_field`."""
    return answer.field_errors or {default_field: answer.error_message}


def refuse_unless_ok(answer: ApiAnswer) -> None:
    """A refusal of a button without fields is an error page with the API's message."""
    if not answer.ok:
        raise ApiRefusal(answer)


def _check_sandbox(page: MerchantPage) -> None:
    if not page.settings.sandbox_enabled:
        raise SandboxDisabled


async def _sandbox_page(page: MerchantPage, forms: Forms | None = None) -> Response:
    _check_sandbox(page)
    forms = forms or Forms()
    starting_after = page.starting_after
    faults = (await page.api.faults()).data
    chaos = (await page.api.webhook_chaos()).data
    clock = (await page.api.clock()).data
    answer = await page.api.requests(starting_after=starting_after, limit=REQUESTS_SHOWN)
    if not answer.ok and starting_after is not None:
        # A cursor whose call left the 7-day log (an old link): the newest page, not a 400 page.
        starting_after = None
        answer = await page.api.requests(starting_after=None, limit=REQUESTS_SHOWN)
    log = answer.data
    refused = forms.refused
    return page.render(
        "sandbox.html",
        active="sandbox",
        status_code=refused.status_code if refused else 200,
        error=refused.page_alert if refused else None,
        faults=faults,
        fault_values=forms.fault
        or {"fault": faults["fault"] or "", "percent": str(faults["percent"] or 10)},
        fault_errors=forms.fault_errors,
        fault_presets=FAULT_PRESETS,
        fault_rule=FAULT_RULE,
        chaos=chaos,
        chaos_on=any(chaos.values()),
        chaos_values=forms.chaos or chaos,
        chaos_errors=forms.chaos_errors,
        max_delay=MAX_CHAOS_DELAY_SECONDS,
        max_failures=MAX_INJECTED_FAILURES,
        clock=clock,
        offset=duration(int(clock["offsetSeconds"])),
        seconds=forms.seconds,
        clock_errors=forms.clock_errors,
        advance_presets=ADVANCE_PRESETS,
        max_advance=MAX_ADVANCE_SECONDS,
        requests=log["requests"],
        log_pagination=log["pagination"],
        paged=starting_after is not None,
    )


@router.get(SANDBOX)
async def show_sandbox(page: PageDep) -> Response:
    return await _sandbox_page(page)


@router.post(f"{SANDBOX}/faults")
async def save_faults(form: FormDep) -> Response:
    _check_sandbox(form)
    values = {"fault": trimmed(await form.text("fault")), "percent": await form.text("percent")}
    body: dict[str, Any] = {"fault": values["fault"]}
    if trimmed(values["percent"]):
        body["percent"] = number(values["percent"])
    answer = await form.api.set_faults(body)
    if answer.ok:
        return redirect(SANDBOX, done="faults-saved")
    forms = Forms(fault=values, fault_errors=_errors(answer, "fault"), refused=answer)
    return await _sandbox_page(form, forms)


@router.post(f"{SANDBOX}/faults/stop")
async def stop_faults(form: FormDep) -> Response:
    _check_sandbox(form)
    refuse_unless_ok(await form.api.clear_faults())
    return redirect(SANDBOX, done="faults-stopped")


@router.post(f"{SANDBOX}/webhook-chaos")
async def save_chaos(form: FormDep) -> Response:
    _check_sandbox(form)
    sent = {api: await form.text(name) for name, api in CHAOS_NUMBERS.items()}
    body: dict[str, Any] = {api: number(text) for api, text in sent.items() if trimmed(text)}
    for name, api in CHAOS_FLAGS.items():
        body[api] = bool(await form.text(name))
    answer = await form.api.set_webhook_chaos(body)
    if answer.ok:
        return redirect(SANDBOX, done="chaos-saved", anchor="#webhook-chaos")
    values: dict[str, Any] = {**sent, **{api: body[api] for api in CHAOS_FLAGS.values()}}
    forms = Forms(chaos=values, chaos_errors=_errors(answer, "body"), refused=answer)
    return await _sandbox_page(form, forms)


@router.post(f"{SANDBOX}/webhook-chaos/off")
async def chaos_off(form: FormDep) -> Response:
    _check_sandbox(form)
    refuse_unless_ok(await form.api.clear_webhook_chaos())
    return redirect(SANDBOX, done="chaos-off", anchor="#webhook-chaos")


@router.post(f"{SANDBOX}/clock/advance")
async def advance_clock(form: FormDep) -> Response:
    _check_sandbox(form)
    seconds = (await form.text("preset")) or (await form.text("seconds"))
    body = {"seconds": number(seconds)} if trimmed(seconds) else {}
    answer = await form.api.advance_clock(body, await form.text("idempotency_key"))
    if answer.ok:
        due = len(answer.data["due"])
        return redirect(SANDBOX, done="clock-advanced", count=due, anchor="#clock")
    forms = Forms(seconds=seconds, clock_errors=_errors(answer, "seconds"), refused=answer)
    return await _sandbox_page(form, forms)
