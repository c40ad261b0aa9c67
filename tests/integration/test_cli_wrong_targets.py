"""Operator commands pointed where they cannot work (a typo in the vhost or the database, a login
refused, a database not migrated yet, a password URL-encoded, another process holding the lock):
one line saying what is wrong and a non-zero exit, never a traceback (which for `merchant create`
printed the INSERT's parameters, the new webhook secret among them) and never a password."""

import gc
import socket
import subprocess
import sys
from collections.abc import Iterator

import aio_pika
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api_service.dashboard.pipeline import redrive_dead_letters
from api_service.errors import ServiceUnavailable
from contracts import amqp_connection
from contracts.settings import Settings
from migrations.runner import alembic_config
from tests.support.cli import run_payouts as payouts
from tests.support.infrastructure import (
    TEST_DATABASE,
    TEST_VHOST,
    recreate_database,
    with_database,
    with_vhost,
)


def one_line_failure(done: subprocess.CompletedProcess[str], *, says: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr[-600:])
    assert "Traceback" not in done.stderr, done.stderr[-600:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr[-600:]
    assert says in done.stderr, done.stderr


@pytest.mark.parametrize(
    "command",
    [("dlq", "list", "processor.payout-commands"), ("webhooks", "replay-parked")],
)
def test_a_vhost_that_does_not_exist(service_env: dict[str, str], command: tuple[str, ...]) -> None:
    """The broker closes the connection (NOT_ALLOWED): aiormq's InvalidFrameError was not caught."""
    url = with_vhost(service_env["PAYOUTS_AMQP_URL"], f"{TEST_VHOST}-no-such-vhost")

    done = payouts({**service_env, "PAYOUTS_AMQP_URL": url}, *command)

    one_line_failure(done, says="does the vhost exist?")


@pytest.fixture
def silent_amqp_url() -> Iterator[str]:
    """A port that takes connections and never says a word (a hung node, a wrong port)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"amqp://guest:guest@127.0.0.1:{listener.getsockname()[1]}/"


def test_a_broker_that_never_answers(service_env: dict[str, str], silent_amqp_url: str) -> None:
    """`payouts dlq list` waited for good: no timeout on the AMQP connect."""
    env = {**service_env, "PAYOUTS_AMQP_URL": silent_amqp_url}

    done = payouts(env, "dlq", "list", "processor.payout-commands")

    one_line_failure(done, says="RabbitMQ does not answer: TimeoutError()")


@pytest.mark.parametrize(
    "command",
    [("reconcile",), ("outbox", "list-parked"), ("merchant", "topup", "x", "1.00")],
    ids=["reconcile", "outbox", "merchant"],
)
def test_a_database_that_never_answers(
    service_env: dict[str, str], command: tuple[str, ...]
) -> None:
    """Each command waited for good (and `make run` with it, before it started anything): the
    connect's timeout ends at the TCP connect, and the server's greeting never came (found by
    the lifecycle review). A port that takes the connection and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        silent = f"mysql+asyncmy://root@127.0.0.1:{listener.getsockname()[1]}/payouts"
        env = {
            **service_env,
            "PAYOUTS_DATABASE_URL": silent,
            "PAYOUTS_COMMAND_DATABASE_TIMEOUT_SECONDS": "1",
        }

        done = payouts(env, *command)

    one_line_failure(done, says="MySQL does not answer")


async def test_the_redrive_button_with_a_broker_that_never_answers_is_a_503(
    settings: Settings, silent_amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(amqp_connection, "CONNECT_TIMEOUT_SECONDS", 0.5)
    elsewhere = settings.model_copy(update={"amqp_url": silent_amqp_url})

    with pytest.raises(ServiceUnavailable):
        await redrive_dead_letters(elsewhere, "processor.payout-commands")


async def test_a_connect_that_times_out_leaves_no_connection_to_close(
    silent_amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aio-pika's connect dropped the connection it timed out on unclosed: its finalizer then
    made a close() nothing awaited, a RuntimeWarning in whichever test collected it."""
    monkeypatch.setattr(amqp_connection, "CONNECT_TIMEOUT_SECONDS", 0.5)

    with pytest.raises(TimeoutError):
        await amqp_connection.connect(silent_amqp_url)

    port = int(silent_amqp_url.rsplit(":", 1)[1].strip("/"))
    left_open = [
        item
        for item in gc.get_objects()
        if isinstance(item, aio_pika.Connection) and item.url.port == port and not item.is_closed
    ]
    assert left_open == []


@pytest.mark.parametrize("command", [("reconcile",), ("merchant", "create", "--name", "Typo")])
def test_a_database_that_does_not_exist(
    service_env: dict[str, str], command: tuple[str, ...]
) -> None:
    url = with_database(service_env["PAYOUTS_DATABASE_URL"], f"{TEST_DATABASE}_no_such_db")

    done = payouts({**service_env, "PAYOUTS_DATABASE_URL": url}, *command)

    one_line_failure(done, says="no such database")


@pytest.mark.parametrize(
    "command", [("merchant", "create", "--name", "Acme"), ("reconcile",), ("seed",), ("migrate",)]
)
def test_a_database_url_that_names_no_database(
    service_env: dict[str, str], command: tuple[str, ...]
) -> None:
    """Found by the operator review: `…:3306/` made MySQL answer 1046 "No database selected": a
    traceback whose last lines printed the new merchant's webhook secret; and GET_LOCK(NULL)
    made the seed and migrate blame a lock another process held."""
    url = with_database(service_env["PAYOUTS_DATABASE_URL"], "")

    done = payouts({**service_env, "PAYOUTS_DATABASE_URL": url}, *command)

    assert done.returncode == 2, (done.returncode, done.stderr[-600:])
    assert "Traceback" not in done.stderr and "whsec_" not in done.stderr, done.stderr[-600:]
    assert "PAYOUTS_DATABASE_URL: must name a database" in done.stderr, done.stderr


def test_a_broker_that_refuses_the_connection(service_env: dict[str, str]) -> None:
    """Found by the operator review: aiormq's own "error when creating transport" line (logged
    at ERROR) came before the command's."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens once the probe is closed
    env = {**service_env, "PAYOUTS_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{closed_port}/"}

    done = payouts(env, "dlq", "list", "processor.payout-commands")

    one_line_failure(done, says="RabbitMQ does not answer")


def test_a_login_refused(service_env: dict[str, str]) -> None:
    url = f"mysql+asyncmy://no_such_user:wrong-secret@127.0.0.1:3306/{TEST_DATABASE}"

    done = payouts({**service_env, "PAYOUTS_DATABASE_URL": url}, "reconcile")

    one_line_failure(done, says="login refused")
    assert "wrong-secret" not in done.stderr


def test_a_database_not_migrated(service_env: dict[str, str]) -> None:
    url = with_database(service_env["PAYOUTS_DATABASE_URL"], f"{TEST_DATABASE}_unmigrated")
    recreate_database(url)

    done = payouts(
        {**service_env, "PAYOUTS_DATABASE_URL": url}, "merchant", "create", "--name", "X"
    )

    one_line_failure(done, says="has `payouts migrate` run")
    assert "whsec_" not in done.stderr


def test_a_database_a_migration_behind_the_code(service_env: dict[str, str]) -> None:
    """The code upgraded before `payouts migrate` ran: an unknown column (1054), whose traceback
    printed the INSERT's parameters, the new webhook secret among them."""
    url = with_database(service_env["PAYOUTS_DATABASE_URL"], f"{TEST_DATABASE}_older")
    recreate_database(url)
    command.upgrade(alembic_config(url), "0023")  # before merchants.secret_rotated_at

    done = payouts(
        {**service_env, "PAYOUTS_DATABASE_URL": url}, "merchant", "create", "--name", "X"
    )

    one_line_failure(done, says="has `payouts migrate` run")
    assert "whsec_" not in done.stderr


def test_a_merchant_name_with_a_byte_not_utf8(service_env: dict[str, str]) -> None:
    """The database refused it (1366) in a traceback printing the new webhook secret."""
    done = payouts(service_env, "merchant", "create", "--name", "Ok\udcffname")

    assert done.returncode == 2, done.stderr[-400:]
    assert "--name" in done.stderr and "whsec_" not in done.stderr, done.stderr[-400:]


def test_migrate_with_a_url_encoded_password(service_env: dict[str, str]) -> None:
    """Alembic's config read `%` as an interpolation: a traceback printing the URL, password
    and all, and migrate could never run with such a password. Now it gets as far as the login
    (which root's empty password refuses)."""
    url = f"mysql+asyncmy://root:p%40ssw0rd@127.0.0.1:3306/{TEST_DATABASE}"

    done = payouts({**service_env, "PAYOUTS_DATABASE_URL": url}, "migrate")

    one_line_failure(done, says="login refused")
    assert "p%40ssw0rd" not in done.stderr and "p@ssw0rd" not in done.stderr


SEED_WAITING_ONE_SECOND = (
    "import sys, cli.database as d, cli.main as m; d.LOCK_WAIT_SECONDS = 1; "
    "sys.argv = ['payouts', 'seed']; m.app()"
)
SEED_LOCK = "LEFT(CONCAT('payouts seed', ':', DATABASE()), 64)"


async def test_a_seed_that_waited_out_another_seeds_lock(
    engine: AsyncEngine, service_env: dict[str, str]
) -> None:
    """DatabaseLockTimeout is a TimeoutError, so an OSError: it was told as "RabbitMQ does not
    answer", from a command that never touches RabbitMQ."""
    async with engine.connect() as holder:
        assert await holder.scalar(text(f"SELECT GET_LOCK({SEED_LOCK}, 0)")) == 1
        try:
            done = subprocess.run(  # noqa: ASYNC221 - the lock is held by the server
                [sys.executable, "-c", SEED_WAITING_ONE_SECOND],
                env=service_env,
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            await holder.execute(text(f"SELECT RELEASE_LOCK({SEED_LOCK})"))

    one_line_failure(done, says="another process held the lock")
    assert "RabbitMQ" not in done.stderr
