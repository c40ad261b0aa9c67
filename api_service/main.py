"""ASGI entry point for uvicorn: `api_service.main:app`."""

from api_service.app import create_app

app = create_app()
