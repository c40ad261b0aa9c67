"""Operator commands facing MySQL down, or RabbitMQ refusing a message: one line and exit 1,
not a traceback (monitoring told "ledger broken" from "database down" only by reading it)."""

from pathlib import Path

import pytest
import typer
from aiormq.exceptions import DeliveryError
from pamqp.commands import Basic
from typer.testing import CliRunner

import cli.main
import cli.reconcile
import cli.up
from cli.main import app
from cli.outages import outages_in_one_line
from contracts.settings import Settings

NOBODY_LISTENS = Settings(database_url="mysql+asyncmy://root@127.0.0.1:1/payouts")


def one_line_and_exit_1(result: object, *, says: str) -> None:
    assert getattr(result, "exception", None) is None or isinstance(
        result.exception,  # type: ignore[attr-defined]
        SystemExit,
    ), f"traceback: {result.exception!r}"  # type: ignore[attr-defined]
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert says in result.output  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("module", "arguments"),
    [(cli.reconcile, ["reconcile"]), (cli.main, ["migrate"]), (cli.up, ["up"])],
)
def test_a_command_facing_mysql_down_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module: object, arguments: list[str]
) -> None:
    monkeypatch.setattr(module, "get_settings", lambda: NOBODY_LISTENS)
    monkeypatch.setattr(cli.up, "DEMO_MERCHANT_FILE", tmp_path / "demo-merchant.json")
    result = CliRunner().invoke(app, arguments)
    one_line_and_exit_1(result, says="MySQL does not answer")


def test_a_message_rabbitmq_refuses_is_one_line_saying_it_stays_where_it_was(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A redrive into a full queue (reject-publish): the dead letter is not acked."""
    with pytest.raises(typer.Exit) as exited, outages_in_one_line():
        raise DeliveryError(None, Basic.Nack(delivery_tag=1))
    assert exited.value.exit_code == 1
    assert "RabbitMQ refused a message, which stays where it was" in capsys.readouterr().err
