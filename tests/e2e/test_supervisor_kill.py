"""The supervisor's SIGKILL (cli/supervisor.py ServiceGroup.kill, what the crash tests use) of an
API of several uvicorn workers (`PAYOUTS_API_WORKERS`, 2 in docker-compose.yml): the workers die
with it, and the API starts again. Killed alone, its supervisor left the workers serving on the
port, and the restarted API exited: address already in use."""

import subprocess
import time
from pathlib import Path

from cli.supervisor import Service, ServiceGroup
from tests.support.system import free_port

API = Service("api", ("api",))


def _workers_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(child) for child in found.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_killed_api_of_two_workers_takes_its_workers_along_and_starts_again(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {**service_env, "PAYOUTS_API_PORT": str(port), "PAYOUTS_API_WORKERS": "2"}
    group = ServiceGroup(env=env, log_dir=tmp_path)
    base_url = f"http://127.0.0.1:{port}"
    try:
        first = group.start(API)
        group.wait_until_ready(base_url, within=60)
        workers = _workers_of(first.pid)
        assert workers

        group.kill(API.name)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)

        group.start(API)
        group.wait_until_ready(base_url, within=60)  # StartupFailed: address already in use
    finally:
        group.stop()
