"""contracts.logging: JSON and text lines, ids from the bound context, masking of account numbers
and secrets in messages, arguments, extras and tracebacks."""

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from api_service.request_log.masking import kept_body
from contracts.logging import (
    ADOPTED_LOGGERS,
    CONTEXT_FIELDS,
    bind_log_context,
    configure_logging,
    redact,
    some_of,
)

PAYOUT_ID = "3f2a1b4c-1234-5678-9abc-012345678901"
MERCHANT_ID = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
API_KEY = "mpk_test_Zx8PqLm3Rt7Vw2Ny5Kb9Hc4Jd6Fg1Sa0Qe3Ur8Io2Tp7"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ISO_UTC_MILLIS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    adopted = {
        name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate)
        for name in ADOPTED_LOGGERS
    }
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, (handlers, propagate) in adopted.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


def capture(log_format: str, level: str = "DEBUG") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(log_format, level, stream=stream)
    return stream


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


pytestmark = pytest.mark.usefixtures("restore_logging")


# --- JSON -----------------------------------------------------------------------------------------


def test_json_line_has_timestamp_level_logger_and_message() -> None:
    stream = capture("json")
    logging.getLogger("processor").info("payout %s succeeded", "p-1")

    [entry] = json_lines(stream)
    assert ISO_UTC_MILLIS.match(entry["ts"])
    assert entry["level"] == "INFO"
    assert entry["logger"] == "processor"
    assert entry["message"] == "payout p-1 succeeded"


def test_json_is_one_object_per_line_even_for_multiline_messages_and_tracebacks() -> None:
    stream = capture("json")
    log = logging.getLogger("webhooks")
    log.warning("first line\nsecond line")
    try:
        raise ConnectionError("receiver closed the connection")
    except ConnectionError:
        log.exception("delivery failed")

    first, second = json_lines(stream)
    assert first["message"] == "first line\nsecond line"
    assert second["level"] == "ERROR"
    assert "ConnectionError: receiver closed the connection" in second["exception"]
    assert len(stream.getvalue().splitlines()) == 2


def test_json_carries_extra_fields_with_their_types() -> None:
    stream = capture("json")
    logging.getLogger("webhooks").info(
        "delivered", extra={"status_code": 204, "latency_ms": 12.5, "event_type": "payout.created"}
    )

    [entry] = json_lines(stream)
    assert entry["status_code"] == 204
    assert entry["latency_ms"] == 12.5
    assert entry["event_type"] == "payout.created"


def test_level_below_the_configured_one_is_dropped() -> None:
    stream = capture("json", level="warning")
    log = logging.getLogger("api")
    log.info("not shown")
    log.warning("shown")

    assert [entry["message"] for entry in json_lines(stream)] == ["shown"]


# --- context --------------------------------------------------------------------------------------


def test_bound_ids_appear_on_every_line_inside_the_block_only() -> None:
    stream = capture("json")
    log = logging.getLogger("processor")
    with bind_log_context(
        request_id="req_1", correlation_id="req_1", payout_id=PAYOUT_ID, merchant_id=MERCHANT_ID
    ):
        log.info("inside")
    log.info("outside")

    inside, outside = json_lines(stream)
    assert inside["request_id"] == "req_1"
    assert inside["correlation_id"] == "req_1"
    assert inside["payout_id"] == PAYOUT_ID
    assert inside["merchant_id"] == MERCHANT_ID
    assert not {"request_id", "correlation_id", "payout_id", "merchant_id"} & outside.keys()


def test_nested_blocks_add_ids_and_restore_the_outer_ones() -> None:
    stream = capture("json")
    log = logging.getLogger("processor")
    with bind_log_context(request_id="req_1"):
        with bind_log_context(payout_id=PAYOUT_ID, merchant_id=None):
            log.info("inner")
        log.info("outer")
    log.info("none")

    ids = [{key: line.get(key) for key in CONTEXT_FIELDS} for line in json_lines(stream)]
    assert ids == [
        {
            "request_id": "req_1",
            "correlation_id": None,
            "payout_id": PAYOUT_ID,
            "merchant_id": None,
            "webhook_id": None,
        },
        {**dict.fromkeys(CONTEXT_FIELDS), "request_id": "req_1"},
        dict.fromkeys(CONTEXT_FIELDS),
    ]


def test_an_explicit_extra_id_wins_over_the_bound_one() -> None:
    stream = capture("json")
    with bind_log_context(payout_id="bound"):
        logging.getLogger("processor").info("x", extra={"payout_id": "explicit"})

    assert json_lines(stream)[0]["payout_id"] == "explicit"


async def test_concurrent_tasks_keep_their_own_ids() -> None:
    stream = capture("json")
    log = logging.getLogger("processor")
    both_bound = asyncio.Barrier(2)

    async def handle(payout_id: str) -> None:
        with bind_log_context(payout_id=payout_id):
            await both_bound.wait()  # both contexts are set before either task logs
            log.info("handled %s", payout_id)

    await asyncio.gather(handle("payout-a"), handle("payout-b"))

    entries = json_lines(stream)
    assert len(entries) == 2
    assert all(entry["message"] == f"handled {entry['payout_id']}" for entry in entries)


# --- text -----------------------------------------------------------------------------------------


def test_text_line_is_readable_with_ids_as_key_values() -> None:
    stream = capture("text")
    with bind_log_context(request_id="req_9", payout_id=PAYOUT_ID):
        logging.getLogger("api").warning("balance too low")

    line = stream.getvalue().rstrip("\n")
    assert re.match(r"^\S+Z WARNING api  balance too low  ", line)
    assert f"payout_id={PAYOUT_ID}" in line
    assert "request_id=req_9" in line
    assert not line.startswith("{")


def test_text_keeps_what_a_client_sent_on_the_line() -> None:
    """A payout id of a path, logged on a database refusal: its newline forged a line of the
    service's own (taint review)."""
    stream = capture("text")
    sent = "p-1\n2026-01-31T10:00:00.000Z INFO    api  \x1b[2Jall good"
    with bind_log_context(payout_id=sent):
        logging.getLogger("api").warning("refused %s", sent)

    [line] = stream.getvalue().splitlines()
    assert "\x1b" not in line
    assert line.endswith("payout_id=p-1\\n2026-01-31T10:00:00.000Z INFO    api  \\x1b[2Jall good")


def test_text_keeps_what_writing_needs() -> None:
    """A ZWNJ in an Urdu name, the ZWJs of a family emoji, a no-break space: written out as
    escapes at first, the name cut in two (diff review)."""
    stream = capture("text")
    text = "\u0645\u062d\u0645\u062f\u200c\u0639\u0644\u06cc 1\u00a0000 \U0001f468\u200d\U0001f469"
    logging.getLogger("api").warning("payout to %s", text)

    assert stream.getvalue().rstrip("\n").endswith(f"payout to {text}")


def test_text_shows_the_traceback_under_the_line() -> None:
    stream = capture("text")
    try:
        raise ValueError("bad amount")
    except ValueError:
        logging.getLogger("api").exception("request failed")

    first, *rest = stream.getvalue().splitlines()
    assert first.endswith("request failed")
    assert rest[-1] == "ValueError: bad amount"


# --- masking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("account 01234567890123", "account **********0123"),
        ("account 0123456789", "account ******6789"),
        ('{"accountNumber":"01234567890123"}', '{"accountNumber":"**********0123"}'),
        ("wallet 03001234567", "wallet *******4567"),
        ("iban PK36SCBL0000001123456702", "iban ********************6702"),
        ("iban pk36scbl0000001123456702.", "iban ********************6702."),
        ("iban PK36 SCBL 0000 0011 2345 6702", "iban **** **** **** **** **** 6702"),
    ],
)
def test_account_numbers_keep_only_their_last_four_characters(raw: str, masked: str) -> None:
    assert redact(raw) == masked


@pytest.mark.parametrize(
    "raw",
    [
        "amount 1500.00 PKR",
        "reference 123456789",  # nine digits: not an account number
        f"payout {PAYOUT_ID}",
        "request req_0123456789012abcdef0123456789abcd",  # digits inside a hex id
        "ledger journal 42 posted",
        # a secret's name as a JSON value: the key after it was replaced by [REDACTED]
        '{"field":"api_key","message":"is not a query parameter"}',
        '{"accountTitle":"Apikey","purpose":"Salary"}',
        "already masked: api_key=[REDACTED] and more",
    ],
)
def test_amounts_short_numbers_and_ids_stay_readable(raw: str) -> None:
    assert redact(raw) == raw


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        (f"created merchant, key {API_KEY}", API_KEY),
        (f"secret={WEBHOOK_SECRET}", WEBHOOK_SECRET),
        ("X-API-KEY: not-a-real-key-42", "not-a-real-key-42"),
        ("headers {'x-api-key': 'some-key-value'}", "some-key-value"),
        ("scope headers [(b'x-api-key', b'raw-header-key')]", "raw-header-key"),
        ("psp_secret=psp_test_secret_change_me", "psp_test_secret_change_me"),
        ("Authorization: Bearer tok_abcdef", "tok_abcdef"),
        ("connecting to amqp://payouts:s3cr3t-pw@rabbitmq:5672/payouts", "s3cr3t-pw"),
        ("url mysql+asyncmy://payouts:db-pass@mysql:3306/payouts", "db-pass"),
        ('{"api_key":"json-key-value","other":1}', "json-key-value"),
        ('("x-api-key", "tuple-key-value")', "tuple-key-value"),
        # a value then a quote and a colon (`name=%r: reason`): let through by the JSON-key rule
        ("psp_secret='psp-value-9': refused by the PSP", "psp-value-9"),
        ('password="hunter2-pw": too short', "hunter2-pw"),
        ("authorization='Bearer tok_abcdef123': expired", "tok_abcdef123"),
        # Names of their own, with values that are no token of ours: they were kept.
        ('{"webhook":{"secret":"plain-secret-1"}}', "plain-secret-1"),
        ('{"signature":"v1,c2lnbmF0dXJl"}', "v1,c2lnbmF0dXJl"),
        ("signature=v1abcdef&page=2", "v1abcdef"),
        ('{"client_secret": "client-s3cret"}', "client-s3cret"),
        ("X-MyPay-Signature: 0a1b2c3d4e5f", "0a1b2c3d4e5f"),
        ('{"access_token":"at-123456"}', "at-123456"),
    ],
)
def test_secrets_never_appear(raw: str, secret: str) -> None:
    redacted = redact(raw)
    assert secret not in redacted
    assert "[REDACTED]" in redacted


@pytest.mark.parametrize(
    "raw",
    [
        '{"previousSecretGraceHours":24}',
        '{"tokenized":"yes","signatures":3}',
        "secrets rotated: 2",
    ],
)
def test_words_that_only_contain_a_secrets_name_stay(raw: str) -> None:
    assert redact(raw) == raw


def test_secret_prefix_is_kept_so_a_reader_knows_what_was_removed() -> None:
    assert redact(API_KEY) == "mpk_test_[REDACTED]"
    assert redact(WEBHOOK_SECRET) == "whsec_[REDACTED]"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_masking_covers_arguments_extras_and_tracebacks(log_format: str) -> None:
    stream = capture(log_format)
    log = logging.getLogger("api")
    log.info("paying %s with key %s", "01234567890123", API_KEY)
    log.info("payout", extra={"account_number": "01234567890123", "headers": {"x": API_KEY}})
    try:
        raise RuntimeError(f"INSERT failed [parameters: ('PK36SCBL0000001123456702', '{API_KEY}')]")
    except RuntimeError:
        log.exception("database error")

    output = stream.getvalue()
    for leaked in ("01234567890123", "PK36SCBL0000001123456702", API_KEY.removeprefix("mpk_test_")):
        assert leaked not in output
    assert "**********0123" in output
    assert "********************6702" in output


def test_library_loggers_with_their_own_handlers_are_routed_through_ours() -> None:
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(logging.StreamHandler(io.StringIO()))
    uvicorn_error.propagate = False
    stream = capture("json")

    uvicorn_error.info(
        "Started server process [%d]", 7, extra={"color_message": "Started \x1b[36m%d\x1b[0m"}
    )

    [entry] = json_lines(stream)
    assert entry["logger"] == "uvicorn.error"
    assert entry["message"] == "Started server process [7]"
    assert "color_message" not in entry
    assert uvicorn_error.handlers == []


# --- configuration --------------------------------------------------------------------------------


def test_configuring_twice_replaces_the_handler_instead_of_doubling_lines() -> None:
    first = capture("text")
    second = capture("json")
    logging.getLogger("api").info("once")

    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


@pytest.mark.parametrize(("log_format", "level"), [("xml", "INFO"), ("json", "LOUD")])
def test_unknown_format_or_level_is_refused(log_format: str, level: str) -> None:
    with pytest.raises(ValueError, match="log"):
        configure_logging(log_format, level, stream=io.StringIO())


def test_a_line_about_a_batch_names_its_first_ten_ids_and_how_many_more() -> None:
    ids = [f"p{number}" for number in range(12)]
    assert some_of(ids[:2]) == "p0, p1"
    assert some_of(ids) == "p0, p1, p2, p3, p4, p5, p6, p7, p8, p9 and 2 more"


def test_the_parameters_after_a_masked_one_stay() -> None:
    line = "GET /api/v1/payouts?api_key=mpk_test_abc123&limit=10 HTTP/1.1"
    assert redact(line) == "GET /api/v1/payouts?api_key=[REDACTED]&limit=10 HTTP/1.1"


def test_a_python_warning_is_a_json_line_too() -> None:
    """warnings.warn (a library's, "coroutine ... was never awaited") wrote plain text lines to
    stderr between the JSON ones. In a process of its own: pytest captures warnings itself."""
    program = (
        "import warnings\n"
        "from contracts.logging import configure_logging\n"
        "configure_logging('json', 'INFO')\n"
        "warnings.warn('something odd', UserWarning)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    (line,) = ran.stderr.splitlines()
    entry = json.loads(line)
    assert (entry["logger"], entry["level"]) == ("py.warnings", "WARNING")
    assert "UserWarning: something odd" in entry["message"]


# Each read by the API as an account number (it drops spaces and dashes, reads +92 / 0092 / 92):
# masks kept them whole (pii review).
SPELT_AS_THE_API_READS = [
    "+92 321 7654003",
    "0321-7654003",
    "0092 321 7654003",
    "+92-321-7654003",
    "92 3217654003",
    "+92-3217654003",
    "PK43-HABB-0000-1234-5678-0001",
    "PK43HABB 0000 1234 5678 0001",
]


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


@pytest.mark.parametrize("spelling", SPELT_AS_THE_API_READS)
def test_an_account_spelt_as_the_api_reads_it_is_masked_in_a_line(spelling: str) -> None:
    masked = redact(f"payout refused: accountNumber {spelling} is not allowed")
    assert len(_digits(masked)) <= 4, masked


@pytest.mark.parametrize("spelling", [*SPELT_AS_THE_API_READS, "7391-8462-5000-1"])
def test_the_account_of_a_body_that_is_not_json_is_masked_however_spelt(spelling: str) -> None:
    """A trailing comma: the request log keeps the body as text."""
    body = f'{{"amount": "1.00", "accountNumber": "{spelling}",}}'
    kept = kept_body(body.encode()) or ""
    assert len(_digits(kept)) <= len("100") + 4, kept


@pytest.mark.parametrize(
    "line",
    ["due at 2026-12-05 06:22:01.123456", "payout 3f2a9c10-1234-5678-9012-345678901234"],
)
def test_times_and_ids_stay_readable(line: str) -> None:
    assert redact(line) == line


def test_the_amqp_client_logs_no_frames_at_debug() -> None:
    """At DEBUG aiormq logged every frame it sent: event bodies, beneficiaries' names in them
    (pii review)."""
    configure_logging("json", "DEBUG", stream=io.StringIO())
    try:
        assert logging.getLogger("aiormq.connection").getEffectiveLevel() == logging.INFO
        assert logging.getLogger("processor_service").getEffectiveLevel() == logging.DEBUG
    finally:
        configure_logging("json", "INFO", stream=io.StringIO())
