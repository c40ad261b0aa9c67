"""With several API workers, a worker killed with requests waiting left its live gauge's file:
uvicorn started another, and every scrape still added in what the dead one had waiting (the
alarm on payouts_api_requests_waiting_for_their_turn fired for good; diff review). And an
operator's own directory kept the last run's files for workers that came back with the same pids."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api_service.metrics import MULTIPROCESS_DIR, forget_dead_workers, shared_by_the_workers

A_WORKER = (
    "from prometheus_client import Gauge; "
    "Gauge('waiting', 'waiting', multiprocess_mode='livesum').set(9)"
)


def test_a_dead_workers_live_gauges_are_forgotten_a_live_ones_kept(tmp_path: Path) -> None:
    env = {**os.environ, MULTIPROCESS_DIR: str(tmp_path)}
    subprocess.run([sys.executable, "-c", A_WORKER], env=env, check=True, timeout=60)
    [dead] = tmp_path.glob("gauge_livesum_*.db")
    alive = tmp_path / f"gauge_livesum_{os.getpid()}.db"
    alive.write_bytes(dead.read_bytes())

    forget_dead_workers(tmp_path)

    assert not dead.exists()
    assert alive.exists()


def test_an_operators_directory_is_emptied_before_the_workers_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, MULTIPROCESS_DIR: str(tmp_path)}
    subprocess.run([sys.executable, "-c", A_WORKER], env=env, check=True, timeout=60)
    [last_runs] = tmp_path.glob("gauge_livesum_*.db")
    # The pid of a worker this run starts next (a container's pids come back), alive.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as worker:
        last_runs.rename(tmp_path / f"gauge_livesum_{worker.pid}.db")
        monkeypatch.setenv(MULTIPROCESS_DIR, str(tmp_path))

        with shared_by_the_workers(2):
            assert list(tmp_path.glob("*.db")) == []
            assert os.environ[MULTIPROCESS_DIR] == str(tmp_path)
        worker.kill()


# What `payouts api` does with one worker: it imports the metrics (which makes its files), empties
# the directory and serves in this same process.
ONE_WORKER_API = """
from api_service.metrics import REQUESTS, _exposition, shared_by_the_workers
with shared_by_the_workers(1):
    REQUESTS.labels("GET", "/api/v1/payouts", "200").inc()
    print(_exposition().decode())
"""


def test_one_workers_counters_are_scraped_from_an_operators_directory(tmp_path: Path) -> None:
    """Emptied whole, the directory lost the files this process had made as it imported the
    metrics, and it went on counting into them, deleted: /metrics was empty (diff review)."""
    env = {**os.environ, MULTIPROCESS_DIR: str(tmp_path)}
    scrape = subprocess.run(
        [sys.executable, "-c", ONE_WORKER_API],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout

    assert 'payouts_api_requests_total{method="GET",route="/api/v1/payouts",status="200"} 1.0' in (
        scrape
    ), scrape
