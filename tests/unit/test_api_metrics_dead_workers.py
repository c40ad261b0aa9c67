"""With several API workers, a worker killed with requests waiting left its live gauge's file:
uvicorn started another, and every scrape still added in what the dead one had waiting (the
alarm on payouts_api_requests_waiting_for_their_turn fired for good; diff review)."""

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
