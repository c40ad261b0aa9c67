"""The sandbox dashboard at /dashboard: what a merchant sees and does in a browser, and the
operators' pipeline health. Server-rendered HTML (Jinja2, autoescaped), a little plain
JavaScript, every asset served from here (it works offline, like /docs).

Every page and action goes through the REST API's own endpoint functions (api_bridge.py): the
API stays the source of truth. Sessions and CSRF: sessions.py.
"""

import logging

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from api_service.dashboard.pages import (
    balance,
    bulk,
    new_payout,
    operations,
    payouts,
    readiness,
    sandbox,
    sign_in,
    webhooks,
)
from api_service.dashboard.rendering import STATIC
from api_service.dashboard.routing import refusal_page
from api_service.middleware import HtmlPages
from contracts.settings import MIN_SECRET_LENGTH, Settings

log = logging.getLogger("api.dashboard")


def larger_bodies(settings: Settings) -> dict[str, int]:
    """The dashboard's paths that take more than the API's 64 KiB: a payroll file, uploaded and
    then confirmed (as base64 in a form field, whose encoding escapes `+`, `/` and `=`: a
    payroll file's text comes to at most 8/3 bytes per byte, beside the signed preview)."""
    return {
        bulk.UPLOAD_PATH: settings.max_batch_body_bytes,
        bulk.CONFIRM_PATH: 3 * settings.max_batch_body_bytes,
    }


def html_pages(settings: Settings) -> HtmlPages | None:
    return HtmlPages("/dashboard/", refusal_page) if settings.dashboard_enabled else None


def install_dashboard(app: FastAPI, settings: Settings) -> None:
    if not settings.dashboard_enabled:
        log.warning("dashboard off: set PAYOUTS_DASHBOARD_SESSION_SECRET to serve it in production")
        return
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
    # Fixed paths before /dashboard/payouts/{payout_id}.
    for module in (sign_in, new_payout, bulk, payouts, balance, webhooks, sandbox, readiness):
        app.include_router(module.router)
    if settings.operations_enabled:
        app.include_router(operations.router)
    elif settings.operator_token:
        log.warning(
            "operations pages off: PAYOUTS_OPERATOR_TOKEN must have at least %d characters "
            "in production",
            MIN_SECRET_LENGTH,
        )
