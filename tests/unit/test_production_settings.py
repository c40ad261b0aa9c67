"""Production never starts with a secret that is printed in the source."""

import base64
from collections.abc import Callable, Iterator

import pytest
from fastapi.routing import iter_route_contexts
from typer.testing import CliRunner

from api_service.app import create_app
from cli import services
from cli import webhooks as sink_and_webhooks
from cli.main import app as payouts
from contracts.secrets_at_rest import DEVELOPMENT_SECRETS_KEY
from contracts.settings import (
    DEFAULT_DASHBOARD_SESSION_SECRET,
    DEFAULT_PSP_SECRET,
    Environment,
    InsecureConfiguration,
    Settings,
    get_settings,
)
from webhook_service.app import create_webhook_app

OWN_SECRETS_KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "secret",
    [
        DEFAULT_PSP_SECRET,
        "psp_compose_secret_change_me",
        "",
        " " * 20,
        "x",
        "fifteen-chars-x",
        # A default with a newline or a space after it (read from a file, quoted in a .env).
        f"{DEFAULT_PSP_SECRET}\n",
        "psp_compose_secret_change_me ",
    ],
    ids=[
        "settings",
        "compose",
        "empty",
        "blank",
        "one character",
        "15 characters",
        "settings and a newline",
        "compose and a space",
    ],
)
def test_the_api_refuses_production_with_a_default_or_guessable_psp_secret(secret: str) -> None:
    """An empty secret let anyone sign an IPN: SUCCESS then REVERSED credits a balance."""
    with pytest.raises(InsecureConfiguration, match="PAYOUTS_PSP_SECRET"):
        create_app(Settings(env=Environment.PRODUCTION, psp_secret=secret))


def test_the_api_refuses_production_with_webhook_urls_into_private_networks_allowed() -> None:
    """docker-compose.yml allows them for its demo receiver: its production accepted
    `http://rabbitmq:15672/api/definitions` and the cloud metadata address as webhook URLs."""
    with pytest.raises(InsecureConfiguration, match="PAYOUTS_WEBHOOK_ALLOW_PRIVATE_URLS"):
        create_app(
            Settings(
                env=Environment.PRODUCTION,
                psp_secret="a-real-secret-from-the-vault",
                secrets_keys=OWN_SECRETS_KEY,
                webhook_allow_private_urls=True,
            )
        )
    create_app(Settings(env=Environment.TEST, webhook_allow_private_urls=True))


def test_the_webhook_service_refuses_production_with_private_webhook_urls_allowed() -> None:
    """It connects: its check of the address at that moment is all that stops a URL whose name
    resolves to a private address after the API checked it (DNS rebinding). It started."""
    with pytest.raises(InsecureConfiguration, match="PAYOUTS_WEBHOOK_ALLOW_PRIVATE_URLS"):
        create_webhook_app(
            Settings(
                env=Environment.PRODUCTION,
                secrets_keys=OWN_SECRETS_KEY,
                webhook_allow_private_urls=True,
            )
        )
    create_webhook_app(Settings(env=Environment.PRODUCTION, secrets_keys=OWN_SECRETS_KEY))
    create_webhook_app(Settings(env=Environment.TEST, webhook_allow_private_urls=True))


@pytest.mark.parametrize(
    "start",
    [
        lambda settings: create_app(settings),
        lambda settings: create_webhook_app(settings),
    ],
    ids=["api", "webhook service"],
)
def test_production_refuses_to_seal_webhook_secrets_with_the_public_development_key(
    start: Callable[[Settings], object],
) -> None:
    """It is in this repository: sealed with it, a copy of the database gives every secret."""
    production = Settings(env=Environment.PRODUCTION, psp_secret="a-real-secret-from-the-vault")
    with pytest.raises(InsecureConfiguration, match="PAYOUTS_SECRETS_KEYS starts with the public"):
        start(production)
    # Still readable as an old key behind one of the operator's own: secrets sealed in test mode
    # are sealed again with it (`payouts secrets reseal`).
    start(
        production.model_copy(
            update={"secrets_keys": f"{OWN_SECRETS_KEY},{DEVELOPMENT_SECRETS_KEY}"}
        )
    )


def test_the_api_starts_in_production_with_a_secret_of_its_own() -> None:
    create_app(
        Settings(
            env=Environment.PRODUCTION,
            psp_secret="a-real-secret-from-the-vault",
            secrets_keys=OWN_SECRETS_KEY,
        )
    )
    create_app(Settings(env=Environment.TEST))  # test mode keeps the documented default


def test_payouts_api_says_why_it_will_not_start(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYOUTS_ENV", "production")
    monkeypatch.delenv("PAYOUTS_PSP_SECRET", raising=False)
    result = CliRunner().invoke(payouts, ["api"])
    assert result.exit_code == 2
    assert "PAYOUTS_PSP_SECRET is a public default" in result.output


def test_payouts_webhooks_says_why_it_will_not_start(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It died on InsecureConfiguration's traceback, exit code 1 (a restart loop in compose)."""
    monkeypatch.setenv("PAYOUTS_ENV", "production")
    monkeypatch.setenv("PAYOUTS_SECRETS_KEYS", OWN_SECRETS_KEY)
    monkeypatch.setenv("PAYOUTS_WEBHOOK_ALLOW_PRIVATE_URLS", "true")
    result = CliRunner().invoke(payouts, ["webhooks"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("payouts webhooks: PAYOUTS_WEBHOOK_ALLOW_PRIVATE_URLS is on")


@pytest.mark.parametrize(
    "command",
    [["migrate"], ["merchant", "create", "--name", "Shop"], ["secrets", "reseal"]],
    ids=["migrate", "merchant create", "secrets reseal"],
)
def test_commands_that_seal_webhook_secrets_refuse_the_development_key_in_production(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """The API and the webhook service refused it, but these commands sealed with it: migration
    0036 every stored secret, `merchant create` the new one, `secrets reseal` moved every secret
    to it (secrets review). Refused before the database is reached (a port nothing listens on)."""
    monkeypatch.setenv("PAYOUTS_ENV", "production")
    monkeypatch.setenv("PAYOUTS_SECRETS_KEYS", f"{DEVELOPMENT_SECRETS_KEY},{OWN_SECRETS_KEY}")
    monkeypatch.setenv("PAYOUTS_DATABASE_URL", "mysql+asyncmy://root@127.0.0.1:1/nothing")
    result = CliRunner().invoke(payouts, command)
    assert result.exit_code == 2, result.output
    named = " ".join(command[:2])  # migrate, merchant create, secrets reseal
    refusal = f"payouts {named}: PAYOUTS_SECRETS_KEYS starts with the public development key"
    assert result.output.startswith(refusal), result.output


def test_payouts_seed_makes_no_demo_merchant_in_production(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker-compose.yml seeds on every `up`: in production it made a merchant with a test key
    and an opening balance out of nothing. Exit 0: the services that wait for it still start.
    (The database is never reached: a port nothing listens on.)"""
    monkeypatch.setenv("PAYOUTS_ENV", "production")
    monkeypatch.setenv("PAYOUTS_DATABASE_URL", "mysql+asyncmy://root@127.0.0.1:1/nothing")
    result = CliRunner().invoke(payouts, ["seed"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("PAYOUTS_ENV=production: no demo merchant made")


@pytest.mark.parametrize(
    ("secret", "enabled"),
    [
        ("", False),
        ("short", False),
        (f"{DEFAULT_DASHBOARD_SESSION_SECRET}\n", False),
        ("s" * 16, True),
    ],
)
def test_the_dashboard_needs_a_secret_of_its_own_in_production(secret: str, enabled: bool) -> None:
    settings = Settings(env=Environment.PRODUCTION, dashboard_session_secret=secret)
    assert settings.dashboard_enabled is enabled


@pytest.mark.parametrize(
    ("env", "token", "enabled"),
    [
        (Environment.PRODUCTION, None, False),
        (Environment.PRODUCTION, "letmein", False),
        (Environment.PRODUCTION, "fifteen-chars-x", False),
        (Environment.PRODUCTION, "o" * 16, True),
        (Environment.TEST, "letmein", True),
    ],
)
def test_the_operations_pages_need_a_token_long_enough_in_production(
    env: Environment, token: str | None, enabled: bool
) -> None:
    """Their sign-in has no throttle: a short operator token could be guessed."""
    settings = Settings(
        env=env,
        psp_secret="a-real-secret-from-the-vault",
        secrets_keys=OWN_SECRETS_KEY,
        dashboard_session_secret="a-dashboard-secret-of-our-own",
        operator_token=token,
    )
    assert settings.operations_enabled is enabled
    routes = iter_route_contexts(create_app(settings).routes)
    assert ("/dashboard/operations" in {route.path_format for route in routes}) is enabled


def test_the_settings_repr_shows_no_secret() -> None:
    settings = Settings(
        secrets_keys=OWN_SECRETS_KEY,
        psp_secret="psp-secret-of-ours-1",
        dashboard_session_secret="dashboard-secret-of-ours",
        operator_token="operator-token-of-ours",
    )
    for secret in (
        OWN_SECRETS_KEY,
        "psp-secret-of-ours-1",
        "dashboard-secret-of-ours",
        "operator-token-of-ours",
    ):
        assert secret not in repr(settings)


def _starts(*_: object, **__: object) -> None:
    raise AssertionError("the service started")


COMPOSE_DATABASE_URL = "mysql+asyncmy://payouts:payouts@127.0.0.1:1/payouts"
COMPOSE_AMQP_URL = "amqp://payouts:payouts@127.0.0.1:1/payouts"


@pytest.mark.parametrize(
    "command", ["api", "webhooks", "processor", "outbox-relay", "migrate", "webhook-sink"]
)
@pytest.mark.parametrize(
    ("variable", "url"),
    [("PAYOUTS_DATABASE_URL", COMPOSE_DATABASE_URL), ("PAYOUTS_AMQP_URL", COMPOSE_AMQP_URL)],
    ids=["database", "broker"],
)
def test_every_service_refuses_the_compose_password_in_production(
    fresh_settings: None,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    variable: str,
    url: str,
) -> None:
    """Only the PSP secret and the secrets key were refused: a production deployment ran on the
    `payouts` password docker-compose.yml publishes (containers review). Refused before either
    server is reached (a port nothing listens on), every other setting its own."""
    monkeypatch.setenv("PAYOUTS_ENV", "production")
    monkeypatch.setenv("PAYOUTS_PSP_SECRET", "an-own-psp-secret-long-enough")
    monkeypatch.setenv("PAYOUTS_SECRETS_KEYS", OWN_SECRETS_KEY)
    monkeypatch.setenv("PAYOUTS_WEBHOOK_ALLOW_PRIVATE_URLS", "false")
    monkeypatch.setenv(variable, url)
    for module, name in [
        (services, "serve"),
        (services, "serve_app"),
        (sink_and_webhooks, "serve_app"),
        (services, "run_uvicorn"),
    ]:
        monkeypatch.setattr(module, name, _starts)  # not refused: fails at once, not hangs
    result = CliRunner().invoke(payouts, [command])
    assert result.exit_code == 2, result.output
    refusal = f"payouts {command}: {variable} has the password docker-compose.yml publishes"
    assert result.output.startswith(refusal), result.output


def test_the_compose_files_database_root_password_is_refused_too() -> None:
    """MYSQL_ROOT_PASSWORD's default is published beside the `payouts` user's (diff review)."""
    root = COMPOSE_DATABASE_URL.replace("payouts:payouts@", "root:root@")
    with pytest.raises(InsecureConfiguration, match="PAYOUTS_DATABASE_URL has the password"):
        Settings(
            env=Environment.PRODUCTION, database_url=root
        ).require_own_service_passwords_in_production()


def test_a_password_of_its_own_and_test_mode_are_not_refused() -> None:
    own = COMPOSE_DATABASE_URL.replace("payouts:payouts@", "payouts:p%40yout5-own-one@")
    in_production = Settings(env=Environment.PRODUCTION, database_url=own)
    in_production.require_own_service_passwords_in_production()
    Settings(database_url=COMPOSE_DATABASE_URL).require_own_service_passwords_in_production()
