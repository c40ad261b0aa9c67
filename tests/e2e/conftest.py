"""End-to-end: the real system as processes, one per test module."""

from collections.abc import Iterator

import pytest

from tests.support.system import RunningSystem, running_system


@pytest.fixture(scope="module")
def system(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    with running_system(service_env, tmp_path_factory.mktemp("service-logs")) as running:
        yield running
