"""The fault spec of X-Sandbox-Fault and PUT /sandbox/faults, and what the request log keeps of a
body."""

import base64
from urllib.parse import urlencode

import orjson
import pytest

from api_service.metrics import LATENCY
from api_service.request_log.masking import MAX_KEPT_BYTES, MAX_KEPT_CHARS, kept_body, kept_query
from api_service.sandbox.faults import MAX_LATENCY_MS, Fault, FaultKind, FaultShare, parse_fault


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        ("latency=0", Fault(FaultKind.LATENCY, 0)),
        ("latency=30000", Fault(FaultKind.LATENCY, 30_000)),
        (" Status=503 ", Fault(FaultKind.STATUS, 503)),
        ("status=429", Fault(FaultKind.STATUS, 429)),
        ("status=500", Fault(FaultKind.STATUS, 500)),
        ("drop-connection", Fault(FaultKind.DROP_CONNECTION)),
        ("timeout-after-commit", Fault(FaultKind.TIMEOUT_AFTER_COMMIT)),
    ],
)
def test_each_fault_is_read_and_labelled_as_written(spec: str, fault: Fault) -> None:
    assert parse_fault(spec) == fault
    assert parse_fault(fault.label) == fault


@pytest.mark.parametrize(
    "spec",
    [
        *("", "latency", "latency=30001", "latency=1.5", "status=404", "status=5030", "drop"),
        *("x=1", "status=503\x1c", "\x1ftimeout-after-commit"),  # controls, not spaces
    ],
)
def test_anything_else_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="must be latency"):
        parse_fault(spec)


@pytest.mark.parametrize(
    ("spec", "metric_label"),
    [
        ("latency=700", "latency"),
        ("latency=29999", "latency"),
        ("status=503", "status=503"),
        ("timeout-after-commit", "timeout-after-commit"),
    ],
)
def test_the_metric_label_is_one_of_a_few(spec: str, metric_label: str) -> None:
    """A latency's milliseconds stay in the request log, out of the metric's labels."""
    assert parse_fault(spec).metric_label == metric_label


def test_retry_after_comes_with_429_and_503_only() -> None:
    assert parse_fault("status=429").retry_after_seconds == 2
    assert parse_fault("status=503").retry_after_seconds == 2
    assert parse_fault("status=500").retry_after_seconds is None
    assert parse_fault("latency=10").retry_after_seconds is None


def test_a_share_strikes_below_its_percent() -> None:
    share = FaultShare(parse_fault("status=503"), 10)
    assert share.strikes(0.0) and share.strikes(0.099)
    assert not share.strikes(0.1) and not share.strikes(0.99)


def test_the_log_masks_account_fields_of_any_length_and_secrets_anywhere() -> None:
    body = orjson.dumps(
        {
            "accountNumber": "12345678",
            "nested": [{"iban": "PK36SCBL0000001123456702"}],
            "note": "key mpk_test_abcdef and 03001234567",
            "amount": "10.00",
        }
    )
    kept = kept_body(body)
    assert kept is not None
    assert "12345678" not in kept and "****5678" in kept
    assert "PK36SCBL0000001123456702" not in kept and "6702" in kept
    assert "abcdef" not in kept and "03001234567" not in kept
    assert '"amount":"10.00"' in kept


def test_the_log_keeps_no_empty_body_and_cuts_long_ones() -> None:
    assert kept_body(b"") is None
    assert kept_body(b"not json 03001234567") == "not json *******4567"
    long = kept_body(b"x" * (MAX_KEPT_CHARS + 10))
    assert long is not None and long.endswith("(10 more characters)")


@pytest.mark.parametrize("depth", [300, 1000])
def test_the_log_keeps_a_body_nested_deeper_than_json_is_written_as_sent(depth: int) -> None:
    """orjson writes at most 254 levels, and the recorder raised in its `finally` (the row lost,
    a traceback logged for input the client controls)."""
    body = b"[" * depth + b'"03001234567"' + b"]" * depth
    assert kept_body(body) == "[" * depth + '"*******4567"' + "]" * depth


def test_the_log_keeps_a_body_of_4_byte_characters_within_the_columns_bytes() -> None:
    """TEXT holds 65,535 bytes: 16 KiB of emoji is 64 KiB, and the insert failed."""
    emoji = "\U0001f600"
    kept = kept_body((emoji * 20_000).encode())
    assert kept is not None and len(kept.encode()) <= 65_535
    cut = kept.removeprefix(emoji * (MAX_KEPT_BYTES // 4))
    assert cut == f"… ({20_000 - MAX_KEPT_BYTES // 4} more characters)"


@pytest.mark.parametrize(
    "sent",
    [
        b'{"amount":"1.00","amount":"9000.00"}',  # refused for its key twice: the log showed one
        b'{"amount":1.50E+3}',  # shown as 1500.0
        b'{"amount":NaN,"fee":-Infinity}',  # refused by the API; shown as null
        b'{"amount":1500.50,"count":7,"flag":true,"none":null}',  # shown as 1500.5
    ],
)
def test_the_log_keeps_the_body_as_sent(sent: bytes) -> None:
    assert kept_body(sent) == sent.decode()


@pytest.mark.parametrize(
    "name",
    [
        "account_number",
        "AccountNumber",
        "account-number",
        "accountNo",
        "bankAccountNumber",
        # a suffix after it (diff review)
        "accountNumberConfirm",
        "account_number[]",
        "ibanNumber",
    ],
)
def test_the_log_masks_an_account_number_under_any_spelling(name: str) -> None:
    """A body may say `account_number` (the API reads it as accountNumber): it was logged whole,
    being too short, or written with dashes, for the digit-run rule; so was one under a name the
    API does not read, .NET's `AccountNumber` say (reqlog review)."""
    sent = f'{{"{name}":"7391-8462-5000-1234"}}'
    assert kept_body(sent.encode()) == f'{{"{name}":"***************1234"}}'
    assert kept_query(f"{name}=7391-8462-5000-1234") == f"{name}=***************1234"


def test_the_log_masks_an_account_field_a_json_escape_hides_in_a_malformed_body() -> None:
    """Undone, the escape showed the field; its value was masked only by the digit-run rule,
    which a number spelt with spaces escapes (reqlog review)."""
    kept = kept_body(b'{"account\\u004eumber":"7391 8462 5000 1234",}')
    assert kept == '{"accountNumber":"***************1234",}'


def test_the_log_keeps_a_field_that_names_no_account_number_as_sent() -> None:
    """Only a name that ends naming an account number masks its value (diff review)."""
    sent = b'{"accountNotes":"holiday","accountNumberType":"checking","ibanCountry":"PK"}'
    assert kept_body(sent) == sent.decode()


@pytest.mark.parametrize(
    "sent",
    [b'{"accountNumber":["1234 5678 9012"]}', b'{"accountNumber":{"number":"1234 5678 9012"}}'],
    ids=["list", "object"],
)
def test_the_log_masks_an_account_field_sent_as_another_type(sent: bytes) -> None:
    """The API refuses it (400), and the log kept it whole: only a string was masked, and the
    digit-run rule does not see an account number spelt with spaces (found by the readiness
    review)."""
    assert kept_body(sent) == '{"accountNumber":"[REDACTED]"}'


def test_the_log_masks_the_account_number_of_a_body_in_utf_16() -> None:
    """The API reads a UTF-16 body (json.detect_encoding); the log decoded it as UTF-8, where the
    account number is `0\\x003\\x00...` and no mask matched it."""
    sent = '{"accountNumber":"03009876543","amount":"10.00"}'
    assert kept_body(sent.encode("utf-16")) == '{"accountNumber":"*******6543","amount":"10.00"}'
    assert kept_body(b"\xff\xfe" + "not json 03009876543".encode("utf-16-le")) == (
        "not json *******6543"
    )


@pytest.mark.parametrize(
    "sent",
    [
        "limit=1&page=2",
        "createdFrom=2026-01-01T00:00:00%2B05:00",  # decoded, `+` is a space: another call
        "merchantReference=a%26status%3DFAILED",  # decoded, one filter became two
    ],
)
def test_the_log_keeps_a_query_as_sent(sent: str) -> None:
    assert kept_query(sent) == sent


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("api_key=mpk_test_abcDEF123&limit=1", "api_key=[REDACTED]&limit=1"),
        # An account field's whole value, as a JSON body's: written with dashes, the number
        # was no run of digits and was kept whole.
        ("accountNumber=%2B923001234567", "accountNumber=*********4567"),
        ("accountNumber=0300-1234567", "accountNumber=********4567"),
        ("iban=PK36+SCBL+0000+0011+2345+6702", "iban=*************************6702"),
        ("reference=03001234567", "reference=*******4567"),  # a number wherever it is
        # all of a secret's value: a log line's rule stops at a space or a punctuation mark
        ("password=correct+horse+battery", "password=[REDACTED]"),
        ("api_key=%2Chunter2x", "api_key=[REDACTED]"),
        ("x-api-key=Token+hunter2x", "x-api-key=[REDACTED]"),
    ],
)
def test_the_log_masks_a_query_even_url_encoded(sent: str, kept: str) -> None:
    assert kept_query(sent) == kept


@pytest.mark.parametrize(
    "sent",
    [
        b'{"password":"correct horse battery"}',
        b'{"webhookSecret":"a hunter2x"}',
        b'{"apiKey":["hunter2x"]}',
        b'{"psp_secret":{"value":"hunter2x"}}',
    ],
)
def test_the_log_masks_all_of_a_secret_fields_value(sent: bytes) -> None:
    """It kept what followed a space, or all of a list or an object."""
    kept = kept_body(sent)
    assert kept is not None and kept.endswith(':"[REDACTED]"}'), kept


def test_the_latency_histogram_tells_an_injected_latency_apart() -> None:
    """Past 5 s every latency fault fell in +Inf, whatever it was."""
    buckets = LATENCY._upper_bounds
    assert MAX_LATENCY_MS / 1000 in buckets


# A webhook secret as contracts.api_keys.new_webhook_secret makes them (standard base64): its
# `+` and `/` are percent-encoded in a form, and escaped as `\/` by a PHP client's JSON.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"\xfb\xff\xbf" * 3 + b"tail-of-the-secret").decode()


def test_the_log_masks_a_webhook_secret_in_a_form_body() -> None:
    """The mask stopped at the first `%2B`: the rest of the secret was kept."""
    kept = kept_body(urlencode({"value": WEBHOOK_SECRET, "note": "rotate"}).encode())
    assert kept == "value=whsec_[REDACTED]&note=rotate"


@pytest.mark.parametrize(
    "sent",
    [
        '{"note": "mpk\\u005ftest_abcdef0123456789",}',  # a trailing comma: malformed
        '{"note": "' + WEBHOOK_SECRET.replace("/", "\\/") + '"',  # cut short: malformed
    ],
)
def test_the_log_masks_a_secret_a_json_escape_hides_in_a_malformed_body(sent: str) -> None:
    kept = kept_body(sent.encode())
    assert kept is not None and "[REDACTED]" in kept
    assert "abcdef0123456789" not in kept and WEBHOOK_SECRET[-16:] not in kept, kept


def test_the_log_keeps_a_malformed_body_as_sent_when_its_escapes_hide_nothing() -> None:
    sent = '{"note": "a \\"quote\\" and \\ud800",'
    assert kept_body(sent.encode()) == sent


def test_the_log_masks_a_json_body_with_a_lone_surrogate() -> None:
    """orjson cannot write a lone surrogate back: the body was kept as sent, its escaped secret
    name and key unmasked, its account field whole."""
    sent = (
        '{"merchantReference": "\\ud800", "note": "mpk\\u005ftest_abcdef0123456789",'
        ' "accountNumber": "0300-1234567", "psp\\u005fsecret": "hunter2-hunter2"}'
    )
    assert kept_body(sent.encode()) == (
        '{"merchantReference":"\\ud800","note":"mpk_test_[REDACTED]",'
        '"accountNumber":"********4567","psp_secret":"[REDACTED]"}'
    )
