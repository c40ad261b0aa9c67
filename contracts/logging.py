"""Logging for every service: one JSON object per line (or readable text on a terminal), the
request / payout / merchant / correlation ids of the work in hand on every line, and no account
number or secret in any line.

    configure_logging(settings.log_format, settings.log_level)
    with bind_log_context(request_id=..., payout_id=...):
        log.info("payout accepted")

The ids live in a contextvar, so they follow a request or a consumed message through every await
without being passed around. Masking runs on the handler, so library records (uvicorn,
SQLAlchemy errors quoting parameters) are masked too.
"""

import logging
import math
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, TextIO

import orjson

from contracts.domain.text import on_one_line

CONTEXT_FIELDS: Final = ("request_id", "correlation_id", "payout_id", "merchant_id", "webhook_id")
LOG_FORMATS: Final = ("json", "text")

# Libraries that install their own handler and stop propagation; configure_logging routes their
# records through ours. (Loggers created later, such as FastStream's per-broker access logger,
# need `logger=` passed to the broker instead.)
# Not uvicorn.access: one line per request is what the API's metrics are for.
ADOPTED_LOGGERS: Final = ("uvicorn", "uvicorn.error", "faststream")
# Kept at INFO or above whatever the level (configure_logging).
FRAME_LOGGERS: Final = ("aiormq", "aio_pika", "pamqp")

_log_context: ContextVar[Mapping[str, str]] = ContextVar(
    "payouts_log_context", default=MappingProxyType({})
)

# Attributes every LogRecord has; anything else on a record came from `extra=`. uvicorn's
# `color_message` repeats the message with terminal colour codes.
_RECORD_ATTRIBUTES: Final = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",
}


class LogThrottle:
    """At most one line per key every `seconds`: a flood of one refusal (a scanner trying keys, a
    PSP still signing with an old secret) wrote a warning per request. Keys are a fixed few (a
    refusal's reason), so what the throttle remembers stays small."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._quiet_until: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """None: leave this line out (it is counted); else write it, saying how many lines of
        `key` were left out since the last one."""
        now = self.clock()
        if now < self._quiet_until.get(key, -math.inf):
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return None
        self._quiet_until[key] = now + self.seconds
        return self._left_out.pop(key, 0)


def bound(field: str) -> str | None:
    """The value of `field` bound to this task's log lines (bind_log_context), if any."""
    return _log_context.get().get(field)


@contextmanager
def bind_log_context(**fields: str | None) -> Iterator[None]:
    """Add ids to every log line written inside the block (None values are left out)."""
    bound = {name: str(value) for name, value in fields.items() if value is not None}
    token = _log_context.set({**_log_context.get(), **bound})
    try:
        yield
    finally:
        _log_context.reset(token)


# How many ids a line that sums up a batch names (a sweep's copies, say), before "and N more".
NAMED_IDS: Final = 10


def some_of(ids: Sequence[str]) -> str:
    """The first NAMED_IDS of `ids`, and how many more: a line that sums up a batch says which
    payouts it was about, so that an operator can follow them by id."""
    named = ", ".join(ids[:NAMED_IDS])
    return f"{named} and {len(ids) - NAMED_IDS} more" if len(ids) > NAMED_IDS else named


# --- masking ------------------------------------------------------------------------------------

REDACTED: Final = "[REDACTED]"
# A Pakistani IBAN (PK, 2 check digits, 4-letter bank code, 16 digits; grouped by spaces or
# dashes, or not), a wallet mobile as the API reads it (`+92 321 7654003`, `0092-321-...`,
# `0321-7654003`), or a run of 10+ digits: account numbers, wallet mobile numbers. A run inside a
# hex id or UUID (a letter, digit or hyphen right next to it) is an id, not an account: ids stay
# readable so a payout can be traced by them. (The spellings with separators were kept whole: the
# API drops spaces and dashes from an account number, and reads +92 / 0092 / 92: pii review.)
_GROUPED = r"[ \-\u2010-\u2015\u2212]?"  # what the API drops between the groups
_NOT_IN_AN_ID = r"(?<![A-Za-z0-9-])"
_ACCOUNT = re.compile(
    rf"\bPK\d{{2}}{_GROUPED}[A-Z]{{4}}(?:{_GROUPED}\d{{4}}){{4}}\b"
    rf"|{_NOT_IN_AN_ID}(?:(?:\+|00)?92{_GROUPED}|0)3\d{{2}}{_GROUPED}\d{{7}}(?![A-Za-z0-9-])"
    rf"|{_NOT_IN_AN_ID}\d{{10,}}(?![A-Za-z0-9-])",
    re.IGNORECASE,
)
# Merchant API keys and webhook secrets, whole token (prefix kept so a reader knows what it was),
# percent-encoded too (a form body's `whsec_ab%2Bcd`: the mask stopped at the `%`).
_SECRET_TOKEN = re.compile(r"(mpk_[a-z]+_|whsec_)[A-Za-z0-9+/=_%-]+")
# The value after a secret-bearing name: `X-API-KEY: v`, `'x-api-key': 'v'`, `psp_secret=v`,
# `password='v': too short`, `("x-api-key", "v")`, ... In the last form (a name, a comma, a
# value) the value must not be a JSON key: in `{"field":"api_key","message":"..."}` the name is a
# value, and the key after it (`message`) was replaced.
# `secret`, `signature` and `token` as names of their own (`secret`, `client_secret`,
# `x-mypay-signature`, `access_token`), not inside a word (`previousSecretGraceHours` stays):
# a value of them that is no token of ours was kept (a signature, a PSP's secret pasted in).
_SECRET_NAMES = (
    r"x-api-key|api[_-]?key|psp[_-]?secret|webhook[_-]?secret|password|passwd|authorization"
    r"|(?<![a-z])(?:secret|signature|token)(?![a-z])"
)
_SECRET_NAME = re.compile(_SECRET_NAMES, re.IGNORECASE)
# A value ends at a space, a quote, a separator, or a query's `&` (the parameters after it stay).
_VALUE = r"""[^\s'",;&}\])]"""
_QUOTE_AND_SCHEME = r"""\s*(?:b?['"])?(?:(?:bearer|basic)\s+)?"""
_SECRET_FIELD = re.compile(
    rf"((?:{_SECRET_NAMES})"
    rf"""(?:['"]?\s*[:=]{_QUOTE_AND_SCHEME}|['"]\s*,{_QUOTE_AND_SCHEME}(?={_VALUE}++(?!['"]\s*:))))"""
    rf"(?!{re.escape(REDACTED)}){_VALUE}+",  # a value masked already is left as it is
    re.IGNORECASE,
)
# Credentials in URLs: amqp://user:password@host, mysql+asyncmy://user:password@host.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]+:)[^@\s]+(@)", re.IGNORECASE)


def _mask_account(match: re.Match[str]) -> str:
    """Every letter and digit but the last four becomes `*`; spaces stay."""
    text = match.group()
    keep_from = len(text) - 4
    return "".join(
        "*" if index < keep_from and char.isalnum() else char for index, char in enumerate(text)
    )


# What a secret-bearing name (_SECRET_FIELD) always contains, lower-cased.
_SECRET_NAME_PARTS: Final = ("key", "secret", "passw", "authorization", "signature", "token")
_DIGITS_AS_ZEROS: Final = str.maketrans("0123456789", "0" * 10)


def _may_name_a_secret(text: str) -> bool:
    """False only when _SECRET_FIELD cannot match: a plain-ASCII text without any of the names
    (beyond ASCII, IGNORECASE matches more than `lower` finds, such as the long s for 's')."""
    if not text.isascii():
        return True
    folded = text.lower()
    return any(part in folded for part in _SECRET_NAME_PARTS)


def _may_hold_an_account(text: str) -> bool:
    """False only when _ACCOUNT cannot match: a plain-ASCII text with neither `PK` and two digits
    (an IBAN's start) nor seven digits in a row (a mobile's last group; beyond ASCII, `\\d`
    matches other digits too)."""
    if not text.isascii():
        return True
    if "0" * 7 in text.translate(_DIGITS_AS_ZEROS):
        return True
    folded = text.lower()
    start = folded.find("pk")
    while start != -1:
        if folded[start + 2 : start + 4].isdigit():
            return True
        start = folded.find("pk", start + 2)
    return False


_Replacement = str | Callable[[re.Match[str]], str]
# Each pattern in the order it runs (each on the previous one's output), what replaces a match,
# and a string check that is False only where the pattern cannot match: a request log keeps
# every body, and a regular expression over it costs ten times the checks that rule it out.
_Mask = tuple[re.Pattern[str], _Replacement, Callable[[str], bool]]
_SECRET_MASKS: Final[tuple[_Mask, ...]] = (
    (_URL_PASSWORD, rf"\g<1>{REDACTED}\g<2>", lambda text: "://" in text),
    # The field first: a token masked first left `api_key=[REDACTED]]` (its value stopped at
    # the `]` of the token's [REDACTED]).
    (_SECRET_FIELD, rf"\g<1>{REDACTED}", _may_name_a_secret),
    (_SECRET_TOKEN, rf"\g<1>{REDACTED}", lambda text: "mpk_" in text or "whsec_" in text),
)
_MASKS: Final[tuple[_Mask, ...]] = (
    *_SECRET_MASKS,
    (_ACCOUNT, _mask_account, _may_hold_an_account),
)


def names_a_secret(name: str) -> bool:
    """Whether a field or parameter of this name holds a secret (all of its value)."""
    return _SECRET_NAME.search(name) is not None


def redact(text: str, masks: tuple[_Mask, ...] = _MASKS) -> str:
    """The text with secrets replaced and account numbers masked to their last four characters
    (`masks`: _SECRET_MASKS, secrets alone)."""
    for pattern, replacement, may_match in masks:
        if may_match(text):
            text = pattern.sub(replacement, text)
    return text


def redact_secrets(text: str) -> str:
    """The text with secrets replaced, account numbers kept: for an id a client chose (a request
    id of ten digits or more stays findable; an API key sent as one does not stay)."""
    return redact(text, _SECRET_MASKS)


def _redact_value(value: Any) -> Any:
    """Strings masked, containers walked, numbers kept; anything else becomes masked text."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(key): _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """Masks the message, the formatted exception and every `extra=` value of a record; of the
    ids it is about (CONTEXT_FIELDS) only secrets (an API key sent as X-Request-ID): a client's
    request id of ten digits or more was masked as an account number, and its lines could not be
    found by it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must still be logged, masked
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        if exception := _exception_text(record):
            record.exc_text = redact(exception)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name in _extra_names(record):
            value = getattr(record, name)
            if name not in CONTEXT_FIELDS:
                setattr(record, name, _redact_value(value))
            elif isinstance(value, str):
                setattr(record, name, redact_secrets(value))
        return True


class ContextFilter(logging.Filter):
    """Stamps the bound ids on the record; an explicit `extra=` id wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _log_context.get().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def _extra_names(record: logging.LogRecord) -> list[str]:
    return [name for name in vars(record) if name not in _RECORD_ATTRIBUTES]


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ids and `extra=` values worth printing (libraries stamp empty defaults)."""
    fields = {name: getattr(record, name) for name in _extra_names(record)}
    return {name: value for name, value in fields.items() if value is not None and value != ""}


def _exception_text(record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    return record.exc_text or None


# --- formats ------------------------------------------------------------------------------------


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the ids, any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in _extra_fields(record).items():
            entry.setdefault(name, value)  # an extra named `level` cannot hide the real one
        if exception := _exception_text(record):
            entry["exception"] = exception
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """`2026-01-31T10:00:00.123Z INFO  processor  payout succeeded  payout_id=... request_id=...`

    The message and the fields on one line: a newline in what a client sent (a path's payout id)
    would start a line that reads as the service's own (taint review)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = [f"{name}={value}" for name, value in _extra_fields(record).items()]
        line = on_one_line(
            f"{_timestamp(record)} {record.levelname:<7} {record.name}  {record.getMessage()}"
            + (f"  {' '.join(fields)}" if fields else "")
        )
        if exception := _exception_text(record):
            line = f"{line}\n{exception}"
        if record.stack_info:
            line = f"{line}\n{record.stack_info}"
        return line


_FORMATTERS: Final[Mapping[str, type[logging.Formatter]]] = {
    "json": JsonFormatter,
    "text": TextFormatter,
}


class _PayoutsHandler(logging.StreamHandler[TextIO]):
    """Marks the handler configure_logging installed, so a second call replaces it."""


def configure_logging(format: str, level: str, *, stream: TextIO | None = None) -> None:
    """Send every record (ours and the libraries') to `stream`, default stderr, in `format`.

    stderr, not stdout: commands such as `payouts seed` print their result on stdout.
    """
    if format not in _FORMATTERS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {format!r}")
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")

    handler = _PayoutsHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(_FORMATTERS[format]())

    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h, _PayoutsHandler)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    # At DEBUG the AMQP client logs every frame, event bodies and their beneficiaries' names in
    # them (pii review): its own DEBUG is never ours.
    for name in FRAME_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric_level, logging.INFO))
    for name in ADOPTED_LOGGERS:
        adopted = logging.getLogger(name)
        adopted.handlers.clear()
        adopted.propagate = True
    # Python's warnings (a library's DeprecationWarning, "coroutine ... was never awaited") went
    # to stderr as plain text lines, between the JSON ones: through the handler, as records.
    logging.captureWarnings(True)
