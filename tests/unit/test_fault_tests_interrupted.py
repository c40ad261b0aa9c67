"""make test runs the fault tests as a background job of its recipe's shell, which starts them
with SIGINT ignored: a Ctrl-C stopped the rest and left them running, their MariaDB and RabbitMQ
with them (diff review). Their conftest takes Python's handler back."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HANDLER = (
    "import signal, tests.faults.conftest; "
    "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
)


def test_the_fault_tests_take_a_ctrl_c_when_run_as_a_background_job() -> None:
    done = subprocess.run(
        ["bash", "-c", f'{sys.executable} -c "{HANDLER}" & wait'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "True", done.stderr
