"""Long-running services: each runs until SIGTERM/SIGINT and then drains its work."""

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

import uvloop

from contracts.garbage_collection import freeze_startup_heap
from contracts.logging import configure_logging as configure_log_format
from contracts.settings import Settings, get_settings


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
