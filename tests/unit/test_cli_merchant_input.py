"""`payouts merchant create` and `payouts seed` refuse what the API would refuse, before any
database work: a name the column cannot hold, a webhook URL PUT /webhook-endpoint rejects."""

import pytest
from typer.testing import CliRunner

from cli.main import app


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["merchant", "create", "--name", "x" * 201], "1 to 200 characters"),
        (["merchant", "create", "--name", "  "], "1 to 200 characters"),
        (["merchant", "create", "--name", "Ok", "--webhook-url", "not a url"], "whitespace"),
        (["merchant", "create", "--name", "Ok", "--webhook-url", "ftp://x.example/h"], "http"),
        (["seed", "--webhook-url", "https://user:pw@x.example/h"], "credentials"),
    ],
)
def test_bad_merchant_input_is_refused_naming_the_option(
    arguments: list[str], complaint: str
) -> None:
    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 2, result.output
    assert complaint in result.output
    assert "Traceback" not in result.output
