"""`payouts up` (`make run`) reports a crashed service with a non-zero exit, after stopping the
others: scripts, CI and make took a crashed processor for a clean run."""

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli.up as up
from cli.main import app
from cli.merchants import NewMerchant
from cli.supervisor import Service
from contracts.settings import Settings

MERCHANT = NewMerchant("m-1", "mpk_test_" + "a" * 43, "whsec_" + "A" * 32)


class CrashedGroup:
    """Every service started and ready, then the processor died."""

    stopped = False

    def __init__(self, env: dict[str, str]) -> None:
        pass

    def start(self, service: Service) -> None:
        pass

    def wait_until_ready(self, base_url: str, *, within: float) -> None:
        pass

    def exited(self) -> dict[str, int]:
        return {"processor": 1}

    def stop(self) -> None:
        CrashedGroup.stopped = True


def test_a_crashed_service_stops_the_others_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def demo_merchant(settings: Settings, saved: object, webhook_url: str) -> NewMerchant:
        return MERCHANT

    monkeypatch.setattr(up, "_demo_merchant", demo_merchant)
    monkeypatch.setattr(up, "DEMO_MERCHANT_FILE", tmp_path / "demo-merchant.json")
    monkeypatch.setattr(up, "ServiceGroup", CrashedGroup)
    monkeypatch.setattr(up, "_create_demo_payouts", lambda base_url, merchant: "")
    monkeypatch.setattr(up, "refuse_a_taken_port", lambda host, port: None)

    result = CliRunner().invoke(app, ["up"])

    assert "a service exited: {'processor': 1}" in result.output
    assert (result.exit_code, CrashedGroup.stopped) == (1, True)


def test_the_saved_demo_merchant_is_private_from_its_creation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Written, then narrowed with chmod, the key was readable by anyone for a moment."""
    monkeypatch.setattr(up, "DEMO_MERCHANT_FILE", tmp_path / ".run" / "demo-merchant.json")
    monkeypatch.setattr(Path, "chmod", lambda *_: None)  # only the creation's mode counts
    old_umask = os.umask(0o022)
    try:
        up._save_merchant(NewMerchant("m-1", "pk_test_key", "whsec_secret"))
    finally:
        os.umask(old_umask)

    assert stat.S_IMODE(up.DEMO_MERCHANT_FILE.stat().st_mode) == 0o600
    assert up._load_saved_merchant() == NewMerchant("m-1", "pk_test_key", "whsec_secret")


@pytest.mark.parametrize("saved", ["{", '{"merchant_id": "m-1"}', "[]"])
def test_a_saved_demo_merchant_file_that_is_not_one_makes_a_new_merchant(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, saved: str
) -> None:
    """Cut short, or of another version: a traceback stopped `make run`."""
    monkeypatch.setattr(up, "DEMO_MERCHANT_FILE", tmp_path / "demo-merchant.json")
    up.DEMO_MERCHANT_FILE.write_text(saved)

    assert up._load_saved_merchant() is None
