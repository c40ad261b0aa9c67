"""Long-running services: each runs until SIGTERM/SIGINT and then drains its work."""

import asyncio
import contextlib
import logging
import resource
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

import typer
import uvicorn
import uvloop
from uvicorn.config import STARTUP_FAILURE

from contracts.garbage_collection import freeze_startup_heap
from contracts.logging import configure_logging as configure_log_format
from contracts.settings import InsecureConfiguration, Settings, get_settings
from contracts.stopping import stop_on_signals
from contracts.topology import TopologyConflict

if TYPE_CHECKING:
    from faststream import FastStream

log = logging.getLogger("payouts")


def refuse_to_start_unsafe(command: str, check: Callable[[], None]) -> None:
    """A service that may not start with these settings (InsecureConfiguration from `check`):
    one line naming the variable, exit code 2, as any setting that cannot work. The webhook
    service died on a traceback, in a restart loop under docker compose."""
    try:
        check()
    except InsecureConfiguration as refused:
        typer.echo(f"payouts {command}: {refused}", err=True)
        raise typer.Exit(2) from refused


def configure_logging(settings: Settings) -> None:
    configure_log_format(settings.log_format, settings.log_level)


# The soft limit taken where the hard one is unlimited (macOS: its kernel refuses more than this,
# OPEN_MAX, and an unlimited soft limit).
OPEN_FILES_WITHOUT_A_HARD_LIMIT = 10240


def open_files_up_to_the_hard_limit() -> None:
    """Raise the soft limit of open files to the hard one: a connection is an open file, and a
    container's soft limit is often 1,024 where its hard one is far higher. The webhook service
    keeps a connection to each merchant host it sent to lately (scale review)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WITHOUT_A_HARD_LIMIT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):  # a limit the kernel does not take
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def serve(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop until it returns, its startup heap frozen first
    (contracts/garbage_collection.py): everything it runs is loaded by then. A vhost holding
    another version's topology is said in one line, exit code 2: a restart cannot mend it. Any
    other error that ends it is logged, its traceback in the line (one JSON object in JSON mode),
    exit code 1: Python printed it as dozens of plain lines among the JSON ones (a consumer whose
    broker closed its connections while it started, under compose)."""
    open_files_up_to_the_hard_limit()
    freeze_startup_heap()
    try:
        uvloop.run(main)
    except TopologyConflict as conflict:
        typer.echo(str(conflict), err=True)
        raise typer.Exit(2) from conflict
    except Exception:
        log.critical("stopped by an unexpected error", exc_info=True)
        raise typer.Exit(1) from None


def serve_app(app: "FastStream") -> None:
    """Run a FastStream application until a signal stops it (contracts/stopping.py)."""

    async def main() -> None:
        running = asyncio.create_task(app.run())
        # Its first step installs FastStream's own signal handlers, which these replace.
        await asyncio.sleep(0)
        stop_on_signals(app.exit)
        await running

    serve(main())


def run_outbox_relay() -> None:
    """Publish committed outbox rows to RabbitMQ (several may run at once)."""
    from processor_service.relay_service import run_outbox_relay as relay

    settings = get_settings()
    refuse_to_start_unsafe("outbox-relay", settings.require_own_service_passwords_in_production)
    configure_logging(settings)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop.set)
        await relay(settings, stop)

    serve(main())


def run_processor() -> None:
    """Consume payout commands and PSP outcomes (several may run at once)."""
    from processor_service.app import create_processor

    settings = get_settings()
    refuse_to_start_unsafe("processor", settings.require_own_service_passwords_in_production)
    configure_logging(settings)
    serve_app(create_processor(settings))


class _StopsQuietly(uvicorn.Server):
    """uvicorn's server, but the SIGTERM or Ctrl-C that stopped it gracefully is not raised again
    once it has stopped: the process exits 0, as every other service does (uvicorn raised it,
    and `docker compose ps` showed `Exited (143)`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()  # what uvicorn raises again as it restores handlers


def run_uvicorn(app: Any, **options: Any) -> None:
    """uvicorn.run, one process stopping with exit code 0 (several: uvicorn's supervisor, which
    does already)."""
    open_files_up_to_the_hard_limit()
    config = uvicorn.Config(app, **options)
    if config.workers > 1:
        uvicorn.run(app, **options)
        return
    server = _StopsQuietly(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
