"""GET /asyncapi: the AsyncAPI document of every RabbitMQ message (YAML), as `make docs` writes
it to docs/asyncapi.yaml."""

from starlette.requests import Request
from starlette.responses import Response

from contracts.asyncapi import asyncapi_yaml


async def asyncapi_endpoint(_: Request) -> Response:
    return Response(asyncapi_yaml(), media_type="application/yaml")
