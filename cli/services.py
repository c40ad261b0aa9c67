"""Long-running services: each runs until SIGTERM/SIGINT and then drains its work."""

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import typer
import uvloop

from contracts.garbage_collection import freeze_startup_heap
from contracts.logging import configure_logging as configure_log_format
from contracts.settings import InsecureConfiguration, Settings, get_settings
from contracts.stopping import stop_on_signals
from contracts.topology import TopologyConflict

if TYPE_CHECKING:
    from faststream import FastStream


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


def serve(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop until it returns, its startup heap frozen first
    (contracts/garbage_collection.py): everything it runs is loaded by then. A vhost holding
    another version's topology is said in one line, exit code 2: a restart cannot mend it."""
    freeze_startup_heap()
    try:
        uvloop.run(main)
    except TopologyConflict as conflict:
        typer.echo(str(conflict), err=True)
        raise typer.Exit(2) from conflict


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
    configure_logging(settings)
    serve_app(create_processor(settings))
