"""docs/operations.md alarms on a jump of `payouts_api_failed_authentications_total{reason=...}`.
Its series did not exist until a first refusal of each reason, so the first burst of guessed
keys after a start (a deploy, a restart) was invisible to increase() and rate(): a fresh API
process exports each reason at 0, as the relay does its own alarm counter (metrics review)."""

import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED_REASONS = {"missing", "invalid", "psp_signature", "operator_token"}
FRESH_API = (
    "import api_service.app, prometheus_client; print(prometheus_client.generate_latest().decode())"
)


def test_each_refusal_reason_is_exported_at_zero_from_the_start() -> None:
    fresh = subprocess.run(
        [sys.executable, "-c", FRESH_API], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert fresh.returncode == 0, fresh.stderr

    samples = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(fresh.stdout)
        for sample in family.samples
        if sample.name == "payouts_api_failed_authentications_total"
    }

    assert samples == dict.fromkeys(DOCUMENTED_REASONS, 0.0)
