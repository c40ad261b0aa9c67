"""What the request log keeps of a body: account numbers masked to their last four characters
and secrets replaced (contracts.logging.redact, the log lines' rule), whatever the field; the
account fields of a JSON body masked whatever their length; at most `MAX_KEPT_CHARS`, and at
most `MAX_KEPT_BYTES` of UTF-8 (the column holds 65,535 bytes, and 16 KiB of 4-byte characters
would not fit: the insert of the whole flush failed)."""

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from contracts.logging import REDACTED, names_a_secret, redact

MAX_KEPT_CHARS = 16 * 1024
MAX_KEPT_BYTES = 60_000  # and room for the "… (N more characters)" that says what was cut
# Under each spelling a body may use (api_service.schemas.RequestModel).
ACCOUNT_FIELDS = frozenset({"accountNumber", "account_number", "iban"})


class _Number(str):
    """A JSON number's text as sent: `1500.50` stays `1500.50`, not the float `1500.5`; `NaN`
    and `Infinity` (which the API refuses) stay themselves, not `null`."""


class _Object(list[tuple[str, Any]]):
    """A JSON object's pairs as sent, a key given twice included (the API refuses such a body,
    and the log must show why)."""


_DECODER = json.JSONDecoder(
    object_pairs_hook=_Object, parse_float=_Number, parse_int=_Number, parse_constant=_Number
)


def kept_query(raw: str) -> str:
    """The query as sent, unless a parameter holds a secret or an account number (even
    URL-encoded, as `%2B923001234567`): then the parameters re-encoded, those masked. (Decoded as
    a whole, `%2B` became `+`, a space, and `%26` a separator: the log showed another call.)"""
    parameters = parse_qsl(raw, keep_blank_values=True)
    masked = [_masked_parameter(name, value) for name, value in parameters]
    return raw if masked == parameters else urlencode(masked, safe="[]*")


def _masked_parameter(name: str, value: str) -> tuple[str, str]:
    """A secret's name masks all of its value (as sent, `a b` or `,x`: a log line's rule stops
    at the first space or punctuation); an account field's value is masked whatever it holds,
    as a JSON body's (`0300-1234567`, read as 03001234567, was kept whole); an account number
    is masked wherever it is."""
    if name in ACCOUNT_FIELDS or names_a_secret(name):
        return redact(name), _kept_field(name, value)
    return redact(name), redact(value)


def _masked_account(value: str) -> str:
    return "*" * max(len(value) - 4, 0) + value[-4:]


def _written(value: Any) -> str:
    """The parsed body written back as sent (but for whitespace and escapes), the account
    fields of every object masked, and all of a secret field's value, whatever it holds."""
    if isinstance(value, _Object):
        pairs = (f"{_written(key)}:{_written(_kept_field(key, item))}" for key, item in value)
        return "{" + ",".join(pairs) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_written(item) for item in value) + "]"
    if isinstance(value, _Number):
        return str.__str__(value)
    try:
        return orjson.dumps(value).decode()  # a string, true, false, null
    except orjson.JSONEncodeError:  # a lone surrogate (`"\\ud800"`), which orjson cannot write
        return json.dumps(value)  # escaped as it was sent


def _kept_field(key: str, item: Any) -> Any:
    """An account field masked, all of it when it holds more than a value (a list, an object:
    refused, but the number inside, spelt with spaces, is no digit run); a secret field's value
    removed."""
    if key in ACCOUNT_FIELDS and isinstance(item, str):
        return _masked_account(item)
    if key in ACCOUNT_FIELDS and isinstance(item, list):  # an array or an object (_Object)
        return REDACTED
    return REDACTED if names_a_secret(key) else item


# A JSON string's escapes, but a surrogate's (undone alone, it is a string UTF-8 cannot hold).
_JSON_ESCAPE = re.compile(r"""\\(?:u(?![dD][89a-fA-F])([0-9a-fA-F]{4})|(["\\/]))""")


# An account field's value in a body that is not JSON, however the number is spelt (`7391-8462-
# 5000-1`, which no pattern of a log line's can tell from other figures): `"accountNumber": "..."`
# in a malformed JSON body, `accountNumber=...` in a form (pii review).
_ACCOUNT_VALUE = re.compile(
    rf"""((?:{"|".join(sorted(ACCOUNT_FIELDS))})["']?\s*[:=]\s*["']?)([^"'&,;}}\n]+)"""
)


def _masked_text(text: str) -> str:
    """A body that is not JSON (malformed, a form), masked as text, kept as sent; but a JSON
    escape hides a secret from the masks (a PHP client's `whsec_ab\\/cd`, `mpk\\u005ftest_...`):
    where undoing the escapes shows something to mask, the body is kept with them undone."""
    text = _ACCOUNT_VALUE.sub(lambda field: field[1] + _masked_account(field[2]), text)
    masked = redact(text)
    unescaped = _JSON_ESCAPE.sub(_unescaped, text)
    if unescaped == text:
        return masked
    masked_unescaped = redact(unescaped)
    return masked if masked_unescaped == unescaped else masked_unescaped


def _unescaped(escape: re.Match[str]) -> str:
    code, character = escape.groups()
    return chr(int(code, 16)) if code else character


def kept_body(raw: bytes) -> str | None:
    """The body as the log keeps it; None when there was none."""
    if not raw:
        return None
    text = raw.decode(json.detect_encoding(raw), errors="replace")  # as the API reads it
    try:
        text = redact(_written(_DECODER.decode(text)))
    except (ValueError, RecursionError):
        # Not JSON (JSONDecodeError is a ValueError), or nested deeper than Python recurses.
        text = _masked_text(text)
    kept = text[:MAX_KEPT_CHARS]
    encoded = kept.encode()
    if len(encoded) > MAX_KEPT_BYTES:
        kept = encoded[:MAX_KEPT_BYTES].decode(errors="ignore")  # no character cut in half
    if len(kept) < len(text):
        return f"{kept}… ({len(text) - len(kept)} more characters)"
    return text
