"""Running the operator CLI (`payouts ...`) as an operator does: a process of its own."""

import asyncio
import subprocess

from cli.supervisor import payouts_command


def run_payouts(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        payouts_command(*args), env=env, capture_output=True, text=True, timeout=120
    )


async def payouts_said(env: dict[str, str], *args: str) -> tuple[int, str]:
    """`payouts ARGS` run as an operator runs it, without blocking the test's event loop: its
    exit code and what it said (stdout and stderr, in order)."""
    process = await asyncio.create_subprocess_exec(
        *payouts_command(*args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    said, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, said.decode()
