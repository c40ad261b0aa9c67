"""Long-running services: each runs until SIGTERM/SIGINT and then drains its work."""

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import typer
import uvloop

from contracts.garbage_collection import freeze_startup_heap
from contracts.logging import configure_logging as configure_log_format
from contracts.settings import InsecureConfiguration, Settings, get_settings


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
    (contracts/garbage_collection.py): everything it runs is loaded by then."""
    freeze_startup_heap()
    uvloop.run(main)


def run_outbox_relay() -> None:
    """Publish committed outbox rows to RabbitMQ (several may run at once)."""
    from processor_service.relay_service import run_outbox_relay as relay

    settings = get_settings()
    configure_logging(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await relay(settings, stop)

    serve(main())


def run_processor() -> None:
    """Consume payout commands and PSP outcomes (several may run at once)."""
    from processor_service.app import create_processor

    settings = get_settings()
    configure_logging(settings)
    serve(create_processor(settings).run())
