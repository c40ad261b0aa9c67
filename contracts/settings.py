"""One settings class for every service; environment variables prefixed `PAYOUTS_`."""

import inspect
import logging
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from urllib.parse import unquote, urlsplit

import asyncmy
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from contracts.secrets_at_rest import (
    DEVELOPMENT_KEY_ID,
    DEVELOPMENT_SECRETS_KEY,
    SecretsKeyError,
    SecretsKeyring,
)


class Environment(StrEnum):
    TEST = "test"
    PRODUCTION = "production"


PRODUCTION_RATE_LIMIT_PER_SECOND = 100
# How long a stopping consumer (contracts.broker) waits for the messages in its hands.
CONSUMER_GRACEFUL_TIMEOUT_SECONDS = 15.0
# The longest a duration setting may be: a longer one overflowed (a datetime, a column) at use.
A_YEAR_IN_HOURS = 366 * 24
LONGEST_RETRY_DELAY_SECONDS = 30 * 24 * 3600.0
# Public (it is in this file): anyone could sign IPNs with it. Fine in test mode only. Every
# default secret this repository ships (here, docker-compose.yml) ends in PUBLIC_SECRET_MARK.
DEFAULT_PSP_SECRET = "psp_test_secret_change_me"
PUBLIC_SECRET_MARK = "change_me"
# Signs the dashboard's session cookies. Public: with PAYOUTS_ENV=production the dashboard stays
# off until PAYOUTS_DASHBOARD_SESSION_SECRET is set (the API itself still starts).
DEFAULT_DASHBOARD_SESSION_SECRET = "dashboard_session_secret_change_me"


class InsecureConfiguration(ValueError):
    """A setting that must never reach production as it is."""


# The passwords docker-compose.yml publishes: the `payouts` user's of the database and of the
# broker (MYSQL_PASSWORD's default, PAYOUTS_AMQP_URL, deploy/rabbitmq/definitions.json), and the
# database root's (MYSQL_ROOT_PASSWORD's default).
PUBLISHED_SERVICE_PASSWORDS = frozenset({"payouts", "root"})
# A production secret shorter than this is guessable (an empty PSP secret let anyone sign IPNs).
MIN_SECRET_LENGTH = 16
DEFAULT_API_HOST = "127.0.0.1"


def is_own_secret(secret: str) -> bool:
    """Not a default published in this repository, and long enough not to be guessed; judged
    without the spaces around it (a default with a newline after it, read from a file, passed:
    the public secret and one character anyone guesses)."""
    own = secret.strip()
    return len(own) >= MIN_SECRET_LENGTH and not own.endswith(PUBLIC_SECRET_MARK)


def _port_reads(url: str) -> str:
    """`url`, if its port (when it names one) is a number of a port: `33o6` was read deep in the
    driver, as a traceback."""
    try:
        _ = urlsplit(url).port  # a property that reads the port, or raises ValueError
    except ValueError as error:
        raise ValueError("its port must be a number from 0 to 65535") from error
    return url


def _driver_takes_its_query(url: str) -> str:
    """`url`, if the driver takes what its query asks for: asyncmy's connect() failed on an
    unknown argument (`?sslmode=require`) with a TypeError no command or service reported as the
    setting's fault (a traceback, or "the database is unavailable" for ever)."""
    parsed = make_url(url)
    repeated = sorted(name for name, value in parsed.query.items() if isinstance(value, tuple))
    if repeated:  # the driver got a tuple's text, or a TypeError
        raise ValueError(f"its query gives {', '.join(repeated)} more than once")
    try:
        _, arguments = parsed.get_dialect()().create_connect_args(parsed)
    except (TypeError, ValueError) as unreadable:  # connect_timeout=abc
        raise ValueError(f"its query cannot be read: {unreadable}") from None
    unknown = sorted(set(arguments) - set(inspect.signature(asyncmy.connect).parameters))
    if unknown:
        raise ValueError(f"the driver takes no query parameter {', '.join(unknown)}")
    if isinstance(arguments.get("ssl"), str):
        raise ValueError("TLS is set by ssl_ca, ssl_cert, ssl_key, ssl_check_hostname, not ssl")
    return url


MAX_API_WORKERS = 64


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYOUTS_", extra="ignore")

    env: Environment = Environment.TEST
    database_url: str = "mysql+asyncmy://root@127.0.0.1:3306/payouts"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    api_host: str = DEFAULT_API_HOST
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_workers: int = Field(default=1, ge=1, le=MAX_API_WORKERS)
    # The proxies whose X-Forwarded-Proto and X-Forwarded-For the API believes (uvicorn's
    # forwarded_allow_ips: addresses or networks, comma-separated, or *). Behind a TLS proxy on
    # another host the dashboard took every request for plain HTTP: its cookies were not Secure
    # and its Origin check refused every form (https:// is not http://). Unset: uvicorn's own
    # FORWARDED_ALLOW_IPS, else 127.0.0.1.
    forwarded_allow_ips: str | None = None
    # On SIGTERM the API answers /ready with 503 this long before it stops accepting requests.
    shutdown_drain_seconds: float = Field(default=1.0, ge=0, le=60)
    # Secrets are left out of the settings' repr (a traceback's locals, a debugging print).
    psp_secret: str = Field(default=DEFAULT_PSP_SECRET, repr=False)
    # Seal merchants' webhook secrets at rest (contracts.secrets_at_rest): comma-separated base64
    # keys of 32 bytes, the first seals. The default is public: production refuses it.
    secrets_keys: str = Field(default=DEVELOPMENT_SECRETS_KEY, repr=False)
    db_pool_size: int = Field(default=20, ge=1, le=1000)
    # How many of one API key's requests run at a time in an API process; the others wait their
    # turn in memory, up to api_turn_wait_seconds, then 429 (a 503 behind a call the database
    # refused: api_service/client_turns.py).
    api_max_in_flight_per_key: int = Field(default=16, ge=1, le=10_000)

    max_body_bytes: int = Field(default=64 * 1024, ge=1)
    # POST /payouts/batch: up to 1,000 payouts
    max_batch_body_bytes: int = Field(default=1024 * 1024, ge=1)
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1, le=A_YEAR_IN_HOURS * 3600)
    idempotency_keys_per_merchant_per_day: int = Field(default=100_000, ge=1)
    # How long an API process remembers the merchant of an API key (0: never): a deactivated key
    # or an endpoint changed through another API process takes effect within this time.
    api_key_cache_seconds: float = Field(default=2.0, ge=0, le=3600)
    # A request waits this long for another one holding its idempotency key (then 409), or for
    # a row another request holds (then 503).
    api_lock_wait_seconds: int = Field(default=5, ge=1, le=3600)
    # A request waits this long for any one answer of the database (a statement's, a new
    # connection's greeting), then answers 503: a database that hangs rather than fails (a
    # network dropping its packets) held requests for as long as it hung. Longer than
    # api_lock_wait_seconds, so a row lock waited on fails as a lock wait first.
    api_database_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    # An operator command (and `payouts up`) waits this long for any one answer of the database,
    # then says so in one line: one that took the connection and never answered held it for
    # ever (lifecycle review). Long: a reconcile of a big ledger reads for a while, and a seed
    # waits up to 120 s for another run's lock (past this, it said "MySQL does not answer").
    command_database_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)
    # A request's head (request line and headers) not complete this long after its connection
    # (or its first byte, on a kept-alive connection) is answered 408 and its connection closed
    # (api_service/http_protocol.py): uvicorn alone waited for it for ever.
    api_header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    # A request's body whose next bytes do not come this long while the API reads it is
    # answered 408 (or, answered already, its connection closed): a body that stopped coming
    # held its connection for ever.
    api_body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Requests per second per API key, counted in MySQL so that every API worker shares the
    # limit. Unset: 100 in production, off in test mode; 0: off.
    rate_limit_per_second: int | None = Field(default=None, ge=0)

    processor_retry_delay_seconds: float = Field(default=2.0, gt=0, le=3600)
    # A payout in RETRY this long after its delay has lost its delayed command (a broker restart
    # mid-dead-lettering): the outbox relay sends it again (processor_service/stalled_payouts.py).
    processor_stalled_retry_seconds: int = Field(default=300, ge=1, le=86400)
    # Messages the processor handles at once, one transaction (and connection) each: most of a
    # message's time is spent waiting for MariaDB, so at 16 the bench's peak left the processor
    # about a second behind the API; at 32, a few hundred milliseconds.
    processor_prefetch: int = Field(default=32, ge=1, le=65535)  # 0 would be no limit
    # Payout commands run in batches of up to this many, one transaction each, `workers` batches
    # at a time (together at most the prefetch); a batch waits at most the window for more after
    # its first command. Two workers: each create holds its merchant's balance row for a moment,
    # a batch waits in that row's queue of locks behind the creates of the moment, and with one
    # batch at a time a hot merchant's processing fell behind its creates.
    processor_batch_size: int = Field(default=16, ge=1, le=1000)
    processor_batch_window_seconds: float = Field(default=0.002, ge=0, le=1)
    processor_batch_workers: int = Field(default=2, ge=1, le=16)
    processor_max_handler_retries: int = Field(default=5, ge=0, le=100)

    # ON_HOLD / IN_REVIEW payouts with no decision fail (DECISION_EXPIRED) after this much of
    # the merchant's sandbox time. The processor claims due scheduled actions (scripted steps,
    # these expiries) this often; POST /sandbox/clock/advance waits up to
    # sandbox_clock_wait_seconds for the window's actions to be applied.
    decision_sla_hours: float = Field(default=72.0, gt=0, le=A_YEAR_IN_HOURS)
    scheduler_poll_interval_seconds: float = Field(default=0.25, gt=0, le=60)
    # Scheduled actions each processor applies at once, each its own claim and transaction. An
    # action due on an advanced clock is claimed with its clock's row: the other workers take
    # another merchant's meanwhile. With one, a merchant's advance over 1,000 scripted payouts
    # held every other merchant's advance for 10 s (neighbours review).
    processor_scheduler_workers: int = Field(default=4, ge=1, le=32)
    sandbox_clock_wait_seconds: float = Field(default=10.0, ge=0, le=60)

    # A QUEUED payout (queueIfLowBalance) not started within this many hours of the merchant's
    # sandbox time fails with QUEUE_EXPIRED: the API schedules the expiry when it queues the
    # payout, the processor applies it (PAYOUTS_QUEUED_EXPIRY_HOURS).
    queued_expiry_hours: float = Field(default=72.0, gt=0, le=A_YEAR_IN_HOURS)

    relay_batch_size: int = Field(default=200, ge=1, le=10_000)
    # The relay polls the outbox every busy interval while rows keep coming, every (idle) poll
    # interval once it has been empty for a second.
    relay_poll_interval_seconds: float = Field(default=0.05, gt=0, le=60)
    relay_busy_poll_interval_seconds: float = Field(default=0.015, gt=0, le=60)
    # A row the broker refused this many times (about an hour of backoff at 20) is parked.
    relay_max_publish_attempts: int = Field(default=20, ge=1, le=1000)
    outbox_retention_hours: int = Field(default=24, ge=1, le=A_YEAR_IN_HOURS)

    webhook_retry_delays: str = "5,300,1800,7200,18000,36000,36000"
    # Under the consumers' graceful timeout: a stopping webhook service finishes the attempts it
    # has started instead of cutting them (and sending them again).
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=CONSUMER_GRACEFUL_TIMEOUT_SECONDS - 3
    )
    webhook_allow_private_urls: bool = False
    webhook_secret_grace_hours: int = Field(default=24, ge=0, le=A_YEAR_IN_HOURS)
    # Also the largest batch of the webhook service's database work: under load, a larger one
    # costs fewer statements per webhook (make bench: 3.6 per payout at 32, 1.8 at 128).
    webhook_prefetch: int = Field(default=128, ge=1, le=65535)
    # How long a batch of the webhook service's attempt records gathers after its first one. A
    # wider window saves a batch's round trips: make bench at half of peak (40 payouts/s), 5 ms:
    # 10.5 ms of the service's CPU per payout; 10 ms: 9.8; 20 ms: 7.7 (and 14 % less for all
    # processes). A record is made after the webhook was sent: its wait delays no webhook.
    webhook_batch_window_seconds: float = Field(default=0.02, ge=0, le=1)
    # How long a batch of leases gathers after its first message: every webhook waits it before
    # its call. make bench on one machine, created→webhook p99 at half of peak: at 20 ms (as the
    # records), 92-157 ms in 4 runs (median 127); at 5 ms, 75-189 ms in 6 (median 81); about one
    # statement per payout more at peak (docs/operations.md).
    webhook_lease_window_seconds: float = Field(default=0.005, ge=0, le=1)
    # A webhook retry later than this (sandbox clock) plus a quarter of its wait, whose delivery
    # no attempt holds, lost its message, or it is held up: the outbox relay sends a copy, once
    # per due time (processor_service/stalled_retries.py).
    webhook_stalled_retry_seconds: int = Field(default=300, ge=1, le=86400)

    log_format: str = Field(default="json", pattern="^(json|text)$")
    log_level: str = "INFO"
    # Prometheus /metrics of the relay, processor and webhook processes; 0 = not served. On
    # loopback unless told (as the API): they listened on every interface.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = DEFAULT_API_HOST
    # The file the relay, the processor, the webhook service and the sink touch while they work,
    # judged by `payouts healthcheck` (contracts/heartbeat.py); unset: none.
    heartbeat_file: str | None = None

    # Money as the balances hold it (DECIMAL(18,2)): a negative was stored as 0, a third decimal
    # cut, and past the column a traceback.
    demo_balance: Decimal = Field(
        default=Decimal("1000000.00"), ge=0, max_digits=18, decimal_places=2
    )

    # The browser dashboard (/dashboard): session cookies signed with this secret, valid this
    # long; the operations pages sign in with the operator token (no token: they are off); and
    # where its links to the RabbitMQ management UI point.
    dashboard_session_secret: str = Field(default=DEFAULT_DASHBOARD_SESSION_SECRET, repr=False)
    dashboard_session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    operator_token: str | None = Field(default=None, repr=False)
    # The API's /metrics takes `Authorization: Bearer <token>` when set; unset, it is open in
    # test mode and not served in production.
    metrics_token: str | None = Field(default=None, repr=False)
    dashboard_rabbitmq_ui_url: str = "http://127.0.0.1:15672"

    @field_validator("database_url")
    @classmethod
    def _async_mysql_driver(cls, value: str) -> str:
        if not value.startswith("mysql+asyncmy://"):
            raise ValueError("must use the mysql+asyncmy:// driver")
        # Without one, MySQL answered 1046 "No database selected" deep in a command (a
        # traceback that printed a new merchant's webhook secret), and GET_LOCK(NULL) was
        # reported as a lock another process held.
        if not urlsplit(value).path.strip("/"):
            raise ValueError("must name a database (mysql+asyncmy://user@host:3306/payouts)")
        return _driver_takes_its_query(_port_reads(value))

    @field_validator("api_host", "metrics_host")
    @classmethod
    def _blank_host_is_the_default(cls, value: str) -> str:
        # Not given, as an empty variable means elsewhere: uvicorn took "" for every interface.
        return value.strip() or DEFAULT_API_HOST

    @field_validator("dashboard_rabbitmq_ui_url")
    @classmethod
    def _ui_url_names_a_host(cls, value: str) -> str:
        # Read at each load of the Operations page, which answered 500 for a port of 99999.
        try:
            parts = urlsplit(value)
        except ValueError as error:
            raise ValueError(f"cannot be read: {error}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL naming a host")
        return _port_reads(value)

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url_names_a_host(cls, value: str) -> str:
        # Without a host (amqp:///payouts) aio-pika retried forever and the relay ignored SIGTERM.
        parts = urlsplit(value)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError("must be an amqp:// or amqps:// URL naming a host")
        return _port_reads(value)

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        if value.upper() not in logging.getLevelNamesMapping():
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value

    @field_validator("operator_token", "metrics_token", "heartbeat_file")
    @classmethod
    def _empty_token_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("webhook_retry_delays")
    @classmethod
    def _delays_are_positive_numbers(cls, value: str) -> str:
        delays = [float(part) for part in value.split(",") if part.strip()]
        # nan fails too. The longest: a message's expiration holds at most 2^32 - 1 ms.
        if not delays or not all(0 < delay <= LONGEST_RETRY_DELAY_SECONDS for delay in delays):
            raise ValueError(
                "must be positive comma-separated seconds, each at most "
                f"{LONGEST_RETRY_DELAY_SECONDS:.0f} (30 days)"
            )
        return value

    @field_validator("secrets_keys")
    @classmethod
    def _readable_keys(cls, value: str) -> str:
        try:
            SecretsKeyring.from_setting(value)
        except SecretsKeyError as unreadable:
            raise ValueError(str(unreadable)) from None
        return value

    @field_validator("api_database_timeout_seconds")
    @classmethod
    def _outlasts_lock_waits(cls, value: float, info: ValidationInfo) -> float:
        lock_wait = info.data.get("api_lock_wait_seconds")
        if lock_wait is not None and value <= lock_wait:
            raise ValueError(
                "must be longer than PAYOUTS_API_LOCK_WAIT_SECONDS (a row lock waited on fails "
                "as a lock wait first)"
            )
        return value

    @property
    def effective_rate_limit_per_second(self) -> int | None:
        """The limit in force, or None when requests are not limited."""
        if self.rate_limit_per_second is None:
            return PRODUCTION_RATE_LIMIT_PER_SECOND if self.env is Environment.PRODUCTION else None
        return self.rate_limit_per_second or None

    def require_safe_for_production(self) -> None:
        """The API refuses to start in production with a PSP secret published in this repository
        or one too short to keep IPNs from being forged, or with webhook URLs into private
        networks allowed (docker-compose.yml allows them for its test-mode demo receiver)."""
        if not self.secret_is_safe(self.psp_secret):
            raise InsecureConfiguration(
                "PAYOUTS_PSP_SECRET is a public default or shorter than "
                f"{MIN_SECRET_LENGTH} characters: with PAYOUTS_ENV=production, set a secret of "
                "your own (the PSP signs its callbacks with it)"
            )
        self.require_safe_webhooks_in_production()

    def require_own_service_passwords_in_production(self) -> None:
        """Every service refuses production with the database's or the broker's password this
        repository publishes: anyone who read docker-compose.yml could log in wherever either
        port is reachable, and only the PSP secret and the secrets key were refused (the
        containers review)."""
        if self.env is not Environment.PRODUCTION:
            return
        for variable, url in (
            ("PAYOUTS_DATABASE_URL", self.database_url),
            ("PAYOUTS_AMQP_URL", self.amqp_url),
        ):
            if unquote(urlsplit(url).password or "") in PUBLISHED_SERVICE_PASSWORDS:
                raise InsecureConfiguration(
                    f"{variable} has the password docker-compose.yml publishes: with "
                    "PAYOUTS_ENV=production, set one of your own (docs/operations.md, Passwords)"
                )

    def require_safe_webhooks_in_production(self) -> None:
        """The API and the webhook service refuse to start in production with merchants' webhook
        secrets sealed with the public development key, or with webhook URLs into private
        networks allowed: the API checks a URL's host when it is set, the webhook service when
        it connects, and only the latter stops a name that resolves to a private address later
        (DNS rebinding). The webhook service started with it on."""
        if self.env is not Environment.PRODUCTION:
            return
        self.require_own_service_passwords_in_production()
        self.require_own_secrets_key_in_production()
        if self.webhook_allow_private_urls:
            raise InsecureConfiguration(
                "PAYOUTS_WEBHOOK_ALLOW_PRIVATE_URLS is on: a merchant's webhook URL could reach "
                "this deployment's own network (the database, the broker's management API, "
                "cloud metadata). With PAYOUTS_ENV=production, set it to false"
            )

    def require_own_secrets_key_in_production(self) -> None:
        """Whatever seals a webhook secret (the API, the webhook service, and the commands
        `migrate`, `merchant create` and `secrets reseal`) refuses to in production with the
        public development key first: the commands sealed with it, a secret as good as in the
        clear in any copy of the database (secrets review)."""
        if self.env is not Environment.PRODUCTION:
            return
        if SecretsKeyring.from_setting(self.secrets_keys).sealing_key_id == DEVELOPMENT_KEY_ID:
            raise InsecureConfiguration(
                "PAYOUTS_SECRETS_KEYS starts with the public development key: with "
                "PAYOUTS_ENV=production, put a key of your own first (32 random bytes, base64: "
                "`openssl rand -base64 32`); merchants' webhook secrets are sealed with it"
            )

    @property
    def queued_expiry(self) -> timedelta:
        return timedelta(hours=self.queued_expiry_hours)

    @property
    def dashboard_enabled(self) -> bool:
        """Off in production until the cookie-signing secret is one of the operator's own."""
        return self.secret_is_safe(self.dashboard_session_secret)

    @property
    def operations_enabled(self) -> bool:
        """The operators' pages: with a token, of at least MIN_SECRET_LENGTH characters in
        production (the sign-in has no throttle: a short token could be guessed)."""
        return self.operator_token is not None and self.secret_is_safe(self.operator_token)

    def secret_is_safe(self, secret: str) -> bool:
        """Any secret will do in test mode; in production only one of the operator's own."""
        return self.env is Environment.TEST or is_own_secret(secret)

    @property
    def api_database_time_seconds(self) -> float:
        """How long a call's statements may take in all: past it, its next statement is refused
        and the call answered 503 (api_service/database_time.py). With the statement under way,
        about three timeouts in all (plus the rollback, and the sandbox fault settings' read
        before the call's own work, on a database slower than a timeout's third)."""
        return 2 * self.api_database_timeout_seconds

    @property
    def api_turn_wait_seconds(self) -> float:
        """How long a call waits for its client's turn before a 429: longer than a running call
        waits on the database before its 503 (its statements' time, then the one under way: three
        timeouts in all), so that a database that hangs answers 503 to every call. Equal to one
        timeout, the calls waiting behind the running ones were told 429 RATE_LIMITED for the
        dependency's outage (rate-limit review)."""
        return 3 * self.api_database_timeout_seconds + 1

    @property
    def sandbox_enabled(self) -> bool:
        return self.env is Environment.TEST

    @property
    def webhook_retry_ladder(self) -> list[float]:
        return [float(part) for part in self.webhook_retry_delays.split(",") if part.strip()]


class ConfigurationError(ValueError):
    """A PAYOUTS_* variable that cannot be read: its message names each one and why."""


@lru_cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as invalid:
        problems = "; ".join(
            f"PAYOUTS_{'_'.join(map(str, error['loc'])).upper()}: "
            + error["msg"].removeprefix("Value error, ")
            for error in invalid.errors()
        )
        raise ConfigurationError(problems) from None
