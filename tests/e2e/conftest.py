"""End-to-end: the real processes, a module's own or, for the modules in shared_system/, one
system they share."""

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.support.raw_http import SHORT_DEADLINES
from tests.support.system import running_api


@pytest.fixture(scope="module")
def api_port(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """The port of `payouts api` alone, with short head and body deadlines (raw_http's)."""
    env = {**service_env, **SHORT_DEADLINES}
    with running_api(env, tmp_path_factory.mktemp("api_logs")) as base_url:
        yield int(urlsplit(base_url).port or 0)
