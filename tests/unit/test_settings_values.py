"""A PAYOUTS_* variable that cannot be read, or whose value would misbehave later (a prefetch of
0 is no limit, `nan` passed "must be positive", an AMQP URL without a host made the relay retry
forever and ignore SIGTERM), is refused when the settings are read, naming the variable; every
command says so in one line and exits 2 instead of a traceback deep inside."""

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from cli.main import app
from contracts.settings import ConfigurationError, get_settings


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PAYOUTS_API_PORT", "eighty"),
        ("PAYOUTS_API_PORT", "70000"),
        ("PAYOUTS_API_WORKERS", "0"),
        ("PAYOUTS_DB_POOL_SIZE", "-5"),
        ("PAYOUTS_PROCESSOR_PREFETCH", "0"),
        ("PAYOUTS_PROCESSOR_PREFETCH", "-1"),
        ("PAYOUTS_PROCESSOR_RETRY_DELAY_SECONDS", "-2"),
        ("PAYOUTS_WEBHOOK_PREFETCH", "0"),
        ("PAYOUTS_WEBHOOK_TIMEOUT_SECONDS", "-1"),
        ("PAYOUTS_WEBHOOK_TIMEOUT_SECONDS", "20"),  # a stopping service would cut the attempt
        ("PAYOUTS_WEBHOOK_RETRY_DELAYS", "5,nan"),
        ("PAYOUTS_WEBHOOK_RETRY_DELAYS", "5,inf"),
        ("PAYOUTS_WEBHOOK_RETRY_DELAYS", "5,1e12"),  # its due time overflowed at a 2nd failure
        ("PAYOUTS_RELAY_BATCH_SIZE", "0"),
        ("PAYOUTS_OUTBOX_RETENTION_HOURS", "-1"),
        ("PAYOUTS_DECISION_SLA_HOURS", "inf"),
        ("PAYOUTS_DECISION_SLA_HOURS", "1e12"),  # a traceback at the processor's start
        ("PAYOUTS_QUEUED_EXPIRY_HOURS", "1e12"),  # every queued create a 500
        ("PAYOUTS_OUTBOX_RETENTION_HOURS", "1000000000000"),  # the housekeeping overflowed
        ("PAYOUTS_WEBHOOK_SECRET_GRACE_HOURS", "1000000000000"),
        ("PAYOUTS_IDEMPOTENCY_TTL_SECONDS", "100000000000"),
        ("PAYOUTS_SHUTDOWN_DRAIN_SECONDS", "inf"),  # the first SIGTERM never stopped the API
        ("PAYOUTS_API_KEY_CACHE_SECONDS", "inf"),  # a deactivated key would never take effect
        ("PAYOUTS_API_DATABASE_TIMEOUT_SECONDS", "5"),  # not above the lock wait (5)
        ("PAYOUTS_API_DATABASE_TIMEOUT_SECONDS", "0"),
        ("PAYOUTS_LOG_LEVEL", "LOUD"),
        ("PAYOUTS_AMQP_URL", "amqp:///payouts"),
        ("PAYOUTS_AMQP_URL", "http://127.0.0.1:5672/"),
        ("PAYOUTS_AMQP_URL", "amqp://guest:guest@127.0.0.1:56y2/"),  # a traceback in yarl
        ("PAYOUTS_DATABASE_URL", "mysql+asyncmy://root@127.0.0.1:33o6/payouts"),  # in SQLAlchemy
        ("PAYOUTS_DATABASE_URL", "mysql+asyncmy://root@127.0.0.1:3306/"),  # 1046, a traceback
        ("PAYOUTS_DATABASE_URL", "mysql+asyncmy://root@127.0.0.1:3306"),
        # asyncmy's connect() refused them (a traceback, or "unavailable" for ever)
        ("PAYOUTS_DATABASE_URL", "mysql+asyncmy://root@127.0.0.1:3306/payouts?sslmode=require"),
        ("PAYOUTS_DATABASE_URL", "mysql+asyncmy://root@127.0.0.1:3306/payouts?ssl=true"),
        ("PAYOUTS_DATABASE_URL", "mysql+asyncmy://root@127.0.0.1:3306/payouts?connect_timeout=x"),
        # given twice: a TypeError, or the text of a tuple the driver could not use
        (
            "PAYOUTS_DATABASE_URL",
            "mysql+asyncmy://root@127.0.0.1:3306/payouts?connect_timeout=1&connect_timeout=2",
        ),
        (
            "PAYOUTS_DATABASE_URL",
            "mysql+asyncmy://root@127.0.0.1:3306/payouts?charset=utf8mb4&charset=utf8mb4",
        ),
        ("PAYOUTS_DASHBOARD_RABBITMQ_UI_URL", "http://127.0.0.1:99999"),  # Operations page 500
        ("PAYOUTS_DASHBOARD_RABBITMQ_UI_URL", "http://[::1"),
        ("PAYOUTS_DASHBOARD_RABBITMQ_UI_URL", "rabbitmq:15672"),
        ("PAYOUTS_DEMO_BALANCE", "1e30"),  # past DECIMAL(18,2): a traceback from `payouts seed`
        ("PAYOUTS_DEMO_BALANCE", "-5"),  # the demo merchant got 0.00 and the seed said success
        ("PAYOUTS_DEMO_BALANCE", "1.234"),  # cut to 1.23 ("Data truncated")
    ],
)
def test_a_value_that_cannot_work_is_refused_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=rf"^{variable}: "):
        get_settings()


def test_a_command_says_which_variable_in_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAYOUTS_PROCESSOR_PREFETCH", "-1")
    monkeypatch.setenv("PAYOUTS_LOG_LEVEL", "loud")
    result = CliRunner().invoke(app, ["processor"])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "PAYOUTS_PROCESSOR_PREFETCH: Input should be greater than or equal to 1" in result.output
    assert "PAYOUTS_LOG_LEVEL: must be DEBUG, INFO" in result.output


@pytest.mark.parametrize("workers", ["0", "-3", "65"])
def test_api_workers_out_of_range_on_the_command_line_are_refused_like_the_variable(
    monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    """Found by the operator review: `payouts api --workers -3` started the API (`--workers 0`
    as if unset), where PAYOUTS_API_WORKERS outside 1..64 stops with exit 2."""
    started: list[dict[str, object]] = []
    monkeypatch.setattr("uvicorn.run", lambda *_, **options: started.append(options))
    result = CliRunner().invoke(app, ["api", "--workers", workers])
    assert result.exit_code == 2, result.output
    assert started == []


@pytest.mark.parametrize(
    "query",
    ["ssl_ca=/etc/ssl/ca.pem&ssl_check_hostname=false", "charset=utf8mb4&connect_timeout=5"],
)
def test_a_database_url_query_the_driver_takes_is_kept(
    monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    url = f"mysql+asyncmy://root@127.0.0.1:3306/payouts?{query}"
    monkeypatch.setenv("PAYOUTS_DATABASE_URL", url)
    assert get_settings().database_url == url


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_api_host_is_the_default_not_every_interface(
    monkeypatch: pytest.MonkeyPatch, blank: str
) -> None:
    """uvicorn took "" for 0.0.0.0 and [::]: the API on every interface."""
    monkeypatch.setenv("PAYOUTS_API_HOST", blank)
    assert get_settings().api_host == "127.0.0.1"
