"""The Swagger UI renders in a real headless Chromium with no internet: its assets come from
the API itself, and the rendered page lists the payout endpoints."""

import shutil
import subprocess

import pytest

from tests.support.system import RunningSystem

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_swagger_ui_renders_the_payout_endpoints(
    system: RunningSystem, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert CHROMIUM is not None
    profile = tmp_path_factory.mktemp("chromium-profile")
    rendered = subprocess.run(
        [
            CHROMIUM,
            *OFFLINE_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            f"{system.base_url}/docs",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout

    assert 'class="swagger-ui' in rendered
    for path in ("/api/v1/payouts", "/api/v1/payouts/{payout_id}/reinitiate", "/api/v1/balance"):
        assert f'data-path="{path}"' in rendered, f"{path} missing from the rendered Swagger UI"
