"""Running the operator CLI (`payouts ...`) as an operator does: a process of its own."""

import subprocess

from cli.supervisor import payouts_command


def run_payouts(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        payouts_command(*args), env=env, capture_output=True, text=True, timeout=120
    )
