"""`payouts merchant create` and `payouts seed` refuse what the API would refuse, before any
database work: a name the column cannot hold, a webhook URL PUT /webhook-endpoint rejects."""

import pytest
from typer.testing import CliRunner

import cli.main
from cli.main import app
from contracts.settings import Settings


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["merchant", "create", "--name", "x" * 201], "1 to 200 characters"),
        (["merchant", "create", "--name", "  "], "1 to 200 characters"),
        (["merchant", "create", "--name", "Acme\u202eyaP"], "U+202E RIGHT-TO-LEFT OVERRIDE"),
        # the seed finds the demo merchant by name, as the database compares it (scale review)
        (["merchant", "create", "--name", "Demo Merchant"], "the demo merchant's name"),
        (["merchant", "create", "--name", " DÉMO merchant"], "the demo merchant's name"),
        (["merchant", "create", "--name", "Ok", "--webhook-url", "not a url"], "whitespace"),
        (["merchant", "create", "--name", "Ok", "--webhook-url", "ftp://x.example/h"], "http"),
        (["seed", "--webhook-url", "https://user:pw@x.example/h"], "credentials"),
        (["webhook-sink", "--secret", "whsec_"], "whsec_ and the base64"),  # was a traceback
        (["webhook-sink", "--secret", "whsec_%%%%"], "whsec_ and the base64"),
    ],
)
def test_bad_merchant_input_is_refused_naming_the_option(
    arguments: list[str], complaint: str
) -> None:
    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 2, result.output
    assert complaint in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-outbox-lag-seconds", "inf"),
        ("--stuck-minutes", "inf"),
        ("--stuck-minutes", "1e12"),
        ("--stuck-minutes", "nan"),
    ],
)
def test_a_reconcile_threshold_it_cannot_use_is_refused_naming_the_option(
    option: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before any database work: `inf` overflowed the date arithmetic into a traceback."""
    unreachable = Settings(database_url="mysql+asyncmy://root@127.0.0.1:1/payouts")
    monkeypatch.setattr(cli.main, "get_settings", lambda: unreachable)

    result = CliRunner().invoke(app, ["reconcile", option, value])

    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "Traceback" not in result.output


def test_a_database_that_does_not_answer_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a traceback (the RabbitMQ commands already said so in one line)."""
    unreachable = Settings(database_url="mysql+asyncmy://root@127.0.0.1:1/payouts")
    monkeypatch.setattr(cli.main, "get_settings", lambda: unreachable)

    result = CliRunner().invoke(app, ["merchant", "topup", "some-merchant", "10"])

    assert result.exit_code == 1, result.output
    assert "MySQL does not answer" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("zero", ["0", "0.00", "0.0", "00", "0.000"])
def test_a_zero_opening_balance_is_taken_however_it_is_written(
    monkeypatch: pytest.MonkeyPatch, zero: str
) -> None:
    """0.0 and 00 were refused as 'must be greater than 0', while 0 and 0.00 were taken."""
    unreachable = Settings(database_url="mysql+asyncmy://root@127.0.0.1:1/payouts")
    monkeypatch.setattr(cli.main, "get_settings", lambda: unreachable)

    result = CliRunner().invoke(app, ["merchant", "create", "--name", "Ok", "--balance", zero])

    assert "MySQL does not answer" in result.output  # past the checks, at the database


def test_a_negative_top_up_is_refused_as_an_amount_not_as_an_unknown_option() -> None:
    """`payouts merchant topup ID -5` said "No such option: -5"."""
    result = CliRunner().invoke(app, ["merchant", "topup", "some-merchant", "-5"])

    assert result.exit_code == 2, result.output
    assert "amount must be greater than 0" in result.output
    unknown = CliRunner().invoke(app, ["merchant", "topup", "some-merchant", "5", "--bogus"])
    assert unknown.exit_code == 2 and "--bogus" in unknown.output  # still refused
