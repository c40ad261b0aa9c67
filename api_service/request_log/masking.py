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
# An account field under any spelling a client may use: the API's (api_service.schemas), and
# those it ignores or refuses, whose value the log showed whole when spelt with dashes (.NET's
# `AccountNumber`, `account-number`, `accountNo`, `bankAccountNumber`: reqlog review). The name
# ends there: `accountNotes` and `ibanCountry` are other fields (diff review).
_ACCOUNT_WORDS = r"(?:account|acct)[\s_-]*(?:number|num|no)|iban"
# ... or, after it, another word of one (`ibanNumber`), a plural, a number, a confirmation, an
# array's brackets (`accountNumberConfirm`, `account_number[]`: diff review).
_ACCOUNT_NAME = (
    rf"(?:{_ACCOUNT_WORDS})"
    r"(?:[\s_-]*(?:number|num|no|confirm(?:ation|ed)?)|s|\d+)?(?:\[\d*\])?"
)
_ACCOUNT_FIELD_NAME = re.compile(rf"{_ACCOUNT_NAME}$", re.IGNORECASE)


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
    if is_account_field(name) or names_a_secret(name):
        return redact(name), _kept_field(name, value)
    return redact(name), redact(value)


def is_account_field(name: str) -> bool:
    """`bankAccountNumber` too: a field whose name ends naming an account number holds one."""
    return _ACCOUNT_FIELD_NAME.search(name) is not None


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
    if is_account_field(key):
        if isinstance(item, str):
            return _masked_account(item)
        if isinstance(item, list):  # an array or an object (_Object)
            return REDACTED
    return REDACTED if names_a_secret(key) else item


# A JSON string's escapes, but a surrogate's (undone alone, it is a string UTF-8 cannot hold).
_JSON_ESCAPE = re.compile(r"""\\(?:u(?![dD][89a-fA-F])([0-9a-fA-F]{4})|(["\\/]))""")


# An account field's value in a body that is not JSON, however the number is spelt (`7391-8462-
# 5000-1`, which no pattern of a log line's can tell from other figures): `"accountNumber": "..."`
# in a malformed JSON body, `accountNumber=...` in a form (pii review).
_ACCOUNT_VALUE = re.compile(
    rf"""({_ACCOUNT_NAME}["']?\s*[:=]\s*["']?)([^"'&,;}}\n]+)""",
    re.IGNORECASE,
)


def _masked_text(text: str) -> str:
    """A body that is not JSON (malformed, a form), masked as text, kept as sent; but a JSON
    escape hides a secret or an account field's name from the masks (a PHP client's
    `whsec_ab\\/cd`, `mpk\\u005ftest_...`, `"account\\u004eumber"`): where undoing the escapes
    shows something to mask, the body is kept with them undone."""
    masked = _masked_as_text(text)
    unescaped = _JSON_ESCAPE.sub(_unescaped, text)
    if unescaped == text:
        return masked
    masked_unescaped = _masked_as_text(unescaped)
    return masked if masked_unescaped == unescaped else masked_unescaped


def _masked_as_text(text: str) -> str:
    return redact(_ACCOUNT_VALUE.sub(lambda field: field[1] + _masked_account(field[2]), text))


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
