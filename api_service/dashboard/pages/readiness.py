"""Go-live readiness: the report of GET /api/v1/sandbox/readiness, item by item with its status
and evidence, grouped (scenarios, API behaviour, webhooks), its summary on top."""

from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from api_service.dashboard.api_bridge import ApiRefusal
from api_service.dashboard.context import FormDep, PageDep, redirect
from api_service.dashboard.routing import dashboard_router
from api_service.errors import SandboxDisabled

router = dashboard_router()
READINESS = "/dashboard/readiness"

# The API's statuses, as the page says them.
STATUS_LABELS = {"passed": "Passed", "failed": "Failed", "not_tried": "Not yet tried"}
API_BEHAVIOUR = frozenset({"timeout_retry_same_key", "retry_after_honoured"})
WEBHOOKS = frozenset(
    {
        "webhook_endpoint_fast",
        "duplicates_accepted",
        "stale_timestamp_refused",
        "wrong_signature_refused",
        "reversal_received",
    }
)


@dataclass
class Group:
    key: str
    title: str
    description: str
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(item["status"] == "passed" for item in self.items)


def group_of(item_id: str) -> str:
    if item_id in API_BEHAVIOUR:
        return "api"
    if item_id in WEBHOOKS:
        return "webhooks"
    return "scenarios"  # the scenario_* items, the reinitiation, any item added later


def grouped(items: list[dict[str, Any]]) -> list[Group]:
    groups = {
        "scenarios": Group(
            "scenarios",
            "Scenarios",
            "Each test scenario seen to its final status, and the flows after it.",
        ),
        "api": Group(
            "api",
            "API behaviour",
            "How your integration retries: the same idempotency key after a lost answer, "
            "no retry before a 429's Retry-After.",
        ),
        "webhooks": Group(
            "webhooks",
            "Webhooks",
            "How your endpoint answers: fast, duplicates accepted, stale or wrongly signed "
            "deliveries refused.",
        ),
    }
    for item in items:
        groups[group_of(str(item["id"]))].items.append(item)
    return [group for group in groups.values() if group.items]


@router.get(READINESS)
async def show_readiness(page: PageDep) -> Response:
    if not page.settings.sandbox_enabled:
        raise SandboxDisabled
    report = (await page.api.readiness()).data
    return page.render(
        "readiness.html",
        active="readiness",
        since=report["since"],
        latest_payouts=report["limitedToLatestPayouts"],
        summary=report["summary"],
        total=len(report["items"]),
        groups=grouped(report["items"]),
        labels=STATUS_LABELS,
    )


@router.post(f"{READINESS}/restart")
async def restart_readiness(form: FormDep) -> Response:
    if not form.settings.sandbox_enabled:
        raise SandboxDisabled
    answer = await form.api.restart_readiness(await form.text("idempotency_key"))
    if not answer.ok:  # an idempotency key refused, say: the API's error, as a page
        raise ApiRefusal(answer)
    return redirect(READINESS, done="readiness-restarted")
