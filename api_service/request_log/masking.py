"""What the request log keeps of a body: account numbers masked to their last four characters
and secrets replaced (contracts.logging.redact, the log lines' rule), whatever the field; the
account fields of a JSON body masked whatever their length; at most `MAX_KEPT_CHARS`."""

from typing import Any

import orjson

from contracts.logging import redact

MAX_KEPT_CHARS = 16 * 1024
ACCOUNT_FIELDS = frozenset({"accountNumber", "iban"})


def _masked_account(value: str) -> str:
    return "*" * max(len(value) - 4, 0) + value[-4:]


def _mask_accounts(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: _masked_account(item)
            if key in ACCOUNT_FIELDS and isinstance(item, str)
            else _mask_accounts(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_mask_accounts(item) for item in value]
    return value


def kept_body(raw: bytes) -> str | None:
    """The body as the log keeps it; None when there was none."""
    if not raw:
        return None
    try:
        text = orjson.dumps(_mask_accounts(orjson.loads(raw))).decode()
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", errors="replace")
    text = redact(text)
    if len(text) > MAX_KEPT_CHARS:
        return f"{text[:MAX_KEPT_CHARS]}… ({len(text) - MAX_KEPT_CHARS} more characters)"
    return text
