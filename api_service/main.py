"""ASGI entry point for uvicorn: `api_service.main:app`."""

from api_service.app import create_app
from contracts.garbage_collection import freeze_startup_heap
from contracts.logging import configure_logging
from contracts.settings import get_settings

# Each uvicorn worker is a fresh process: configure its logging here, not only in the CLI.
configure_logging(get_settings().log_format, get_settings().log_level)
app = create_app()
freeze_startup_heap()
