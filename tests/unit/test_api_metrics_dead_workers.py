"""With several API workers, a worker killed with requests waiting left its live gauge's file:
uvicorn started another, and every scrape still added in what the dead one had waiting (the
alarm on payouts_api_requests_waiting_for_their_turn fired for good; diff review). And an
operator's own directory kept the last run's files for workers that came back with the same pids."""

import os
import subprocess
import sys
from pathlib import Path

from api_service.metrics import MULTIPROCESS_DIR, forget_dead_workers

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


# `payouts api` with an operator's directory: its files of the last run (this pid's: tini gives the
# API the same pid at each start), then the start over, the server counting and a scrape.
STARTING_OVER = """
import os
from api_service.metrics import EMPTIED, REQUESTS, _exposition, start_over_with_an_empty_directory
if EMPTIED not in os.environ:
    REQUESTS.labels("GET", "/last-run", "200").inc(5)
start_over_with_an_empty_directory()
REQUESTS.labels("GET", "/api/v1/payouts", "200").inc()
print(_exposition().decode())
"""


def test_the_api_starts_over_with_none_of_the_last_runs_counts(tmp_path: Path) -> None:
    """The last run's files stayed in an operator's directory, and a process with the pid of
    one (a worker, or with one worker the API itself) took its counts and its waiting requests
    on: kept as its own, this process's files carried the last run's 5 (diff reviews)."""
    (tmp_path / "gauge_livesum_1.db").write_bytes(b"")  # another process's, of the last run
    env = {**os.environ, MULTIPROCESS_DIR: str(tmp_path)}
    scrape = subprocess.run(
        [sys.executable, "-c", STARTING_OVER],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout

    assert 'route="/last-run"' not in scrape, scrape
    assert 'payouts_api_requests_total{method="GET",route="/api/v1/payouts",status="200"} 1.0' in (
        scrape
    ), scrape
    assert not (tmp_path / "gauge_livesum_1.db").exists()
