"""The modules here share one running system (its processes started once, about 5 s each time):
they need nothing but the test settings, and a test that kills a service starts it again. A module
that needs other settings starts a system of its own outside this package (two systems on one
database and vhost would take each other's messages)."""

from collections.abc import Iterator

import pytest

from tests.support.system import RunningSystem, running_system


@pytest.fixture(scope="package")
def system(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    with running_system(service_env, tmp_path_factory.mktemp("service-logs")) as running:
        yield running
