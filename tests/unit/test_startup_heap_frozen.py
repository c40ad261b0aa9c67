"""Each service's entry point freezes what it loaded before it serves (contracts/
garbage_collection.py), so that a full collection never walks it again. Each case runs in its own
interpreter: freezing the test process's heap would keep every test's garbage."""

import subprocess
import sys

import pytest

# The services' event loops never start: `uvloop.run` prints how many objects are frozen by then.
_SERVICE = """
import gc, uvloop
def _instead_of_serving(coroutine):
    coroutine.close()
    print(gc.get_freeze_count())
uvloop.run = _instead_of_serving
from cli.main import app
app([{command!r}], standalone_mode=False)
"""
_API = "import gc, api_service.main; print(gc.get_freeze_count())"
# Fewer than what loading the modules alone leaves behind.
LOADED_OBJECTS = 50_000


def _frozen_objects(program: str) -> int:
    finished = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True
    )
    return int(finished.stdout.split()[-1])


@pytest.mark.parametrize("command", ["processor", "outbox-relay", "webhooks"])
def test_a_service_freezes_its_heap_before_its_event_loop_runs(command: str) -> None:
    assert _frozen_objects(_SERVICE.format(command=command)) > LOADED_OBJECTS


def test_the_api_module_uvicorn_loads_freezes_its_heap() -> None:
    assert _frozen_objects(_API) > LOADED_OBJECTS
