"""What the request log keeps of a body: account numbers masked to their last four characters
and secrets replaced (contracts.logging.redact, the log lines' rule), whatever the field; the
account fields of a JSON body masked whatever their length; at most `MAX_KEPT_CHARS`, and at
most `MAX_KEPT_BYTES` of UTF-8 (the column holds 65,535 bytes, and 16 KiB of 4-byte characters
would not fit: the insert of the whole flush failed)."""

from typing import Any

import orjson

from contracts.logging import redact

MAX_KEPT_CHARS = 16 * 1024
MAX_KEPT_BYTES = 60_000  # and room for the "… (N more characters)" that says what was cut
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
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
        # Not JSON, or nested deeper than orjson writes (254) or Python recurses: kept as sent.
        text = raw.decode("utf-8", errors="replace")
    text = redact(text)
    kept = text[:MAX_KEPT_CHARS]
    encoded = kept.encode()
    if len(encoded) > MAX_KEPT_BYTES:
        kept = encoded[:MAX_KEPT_BYTES].decode(errors="ignore")  # no character cut in half
    if len(kept) < len(text):
        return f"{kept}… ({len(text) - len(kept)} more characters)"
    return text
