"""HTML pages: one Jinja2 environment (autoescape on everything it renders), the filters the
templates share, and the headers every dashboard response carries."""

import re
import unicodedata
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# Scripts and styles come only from our own static files (none inline, none from elsewhere):
# even a value that escaped escaping could not run. No framing, forms post only to us.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def money(value: str | Decimal | None) -> str:
    """'1500.00' -> '1,500.00' (the API's strings, grouped for reading)."""
    if value is None or value == "":
        return ""
    try:
        return f"{Decimal(value):,.2f}"
    except InvalidOperation:
        return str(value)


def parse_time(value: str) -> datetime:
    """The API's ISO-8601 UTC times ('...Z'), aware."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def when(value: str | None) -> str:
    """'2026-12-01T10:00:03.123Z' -> '2026-12-01 10:00:03' (UTC, said once per page)."""
    if not value:
        return ""
    return parse_time(value).strftime("%Y-%m-%d %H:%M:%S")


def status_class(status: str | None) -> str:
    return f"status status-{(status or 'unknown').lower().replace('_', '-')}"


# What may be an invisible character: anything but printable ASCII and the line's own breaks.
_MAYBE_INVISIBLE = re.compile(r"[^\x20-\x7e\n\r\t]")
_INVISIBLE = ("Cc", "Cf", "Zl", "Zp")


def _escaped_if_invisible(found: re.Match[str]) -> str:
    char = found.group()
    if unicodedata.category(char) not in _INVISIBLE:
        return char
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    beyond = code - 0x10000  # a surrogate pair, as JSON writes it (`\\ue0067` read as U+E006, 7)
    return f"\\u{0xD800 + (beyond >> 10):04x}\\u{0xDC00 + (beyond & 0x3FF):04x}"


def invisible_escaped(text: str) -> str:
    """A body the dashboard shows as someone else wrote it (an API call, a receiver's answer),
    its invisible characters as `\\uXXXX` escapes, as JSON may write them: a U+202E RIGHT-TO-LEFT
    OVERRIDE in a refused title showed the rest of the body's line backwards."""
    return _MAYBE_INVISIBLE.sub(_escaped_if_invisible, text)


def new_idempotency_key() -> str:
    """A form's X-IDEMPOTENCY-KEY: a double submit of the same form replays the first answer."""
    return str(uuid.uuid4())


_ACTION_KEYS = uuid.UUID("5e0c1f3a-8f4b-4d4e-9a57-3c1b2f6d7e10")


def action_key(*state: object) -> str:
    """The X-IDEMPOTENCY-KEY of an action on something as it is shown now (the action, what it
    acts on, and that thing's version): a double submit, or a click on a copy of the page that
    refreshed meanwhile, replays the first answer; once the thing has changed it is a new key.
    (A fresh key in every render made a live fragment's HTML change at each poll, replacing the
    page's buttons under the user's click, and a click spanning a refresh was sent twice.)"""
    return str(uuid.uuid5(_ACTION_KEYS, "\x1f".join(map(str, state))))


environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(
    money=money, when=when, status_class=status_class, invisible_escaped=invisible_escaped
)
environment.globals.update(new_idempotency_key=new_idempotency_key, action_key=action_key)


def render(template: str, context: Mapping[str, Any]) -> str:
    return environment.get_template(template).render(context)


def page(template: str, context: Mapping[str, Any], status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(render(template, context), status_code=status_code)
