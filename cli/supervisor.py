"""Runs several service processes together (`payouts up`, end-to-end tests): start them, watch
them, and stop them all with SIGTERM (then SIGKILL after a grace period)."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

STOP_GRACE_SECONDS = 20.0


@dataclass(frozen=True)
class Service:
    name: str
    args: Sequence[str]  # arguments of the `payouts` command
    env: Mapping[str, str] = field(default_factory=dict)  # on top of the group's


def payouts_command(*args: str) -> list[str]:
    """`payouts ...` run by this interpreter, so it works without the venv on PATH."""
    return [sys.executable, "-m", "cli.main", *args]


class StartupFailed(Exception):
    """A service died while the group was starting, or the API never became ready."""


@dataclass
class ServiceGroup:
    env: Mapping[str, str]
    log_dir: Path | None = None  # None: the services write to this terminal
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, service: Service) -> subprocess.Popen[bytes]:
        output: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / f"{service.name}.log").open("ab")
            self.logs.append(output)
        process = subprocess.Popen(
            payouts_command(*service.args),
            env={**self.env, **service.env},
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            # A session of its own: a terminal's Ctrl-C reaches the supervisor alone, which
            # stops each service with one SIGTERM. Reaching them too, it was their first signal
            # and the SIGTERM their second: each stopped at once, its work cut short (lifecycle
            # review). And a kill reaches every process of it (_kill).
            start_new_session=True,
        )
        self.processes[service.name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL: the crash a test wants to survive."""
        process = self.processes.pop(name)
        self._kill(process)

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process and every process of its session: an API of several uvicorn
        workers is a supervisor and its workers, and killed alone the supervisor left them
        serving on its port (a restart failed: address already in use). (SIGTERM goes to the
        supervisor alone: a worker hands itself one signal, and a second would cut its drain
        short.)"""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def wait_until_ready(self, base_url: str, *, within: float) -> None:
        """Until the API's /ready answers 200; StartupFailed if a service dies or time runs out."""
        self.wait_until_answered(f"{base_url}/api/v1/ready", f"the API at {base_url}", within)

    def wait_until_answered(self, url: str, what: str, within: float) -> None:
        """Until `url` answers 200; StartupFailed if a service dies or time runs out, saying
        what `url` answered last (the API's /ready names the dependency it waits for)."""
        deadline = time.monotonic() + within
        last = "nothing"
        while time.monotonic() < deadline:
            if self.exited():
                raise StartupFailed(f"a service exited during start-up: {self.exited()}")
            try:
                answer = httpx.get(url, timeout=2)
            except httpx.HTTPError as error:
                last = repr(error)
            else:
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            time.sleep(0.2)
        raise StartupFailed(
            f"{what} did not become ready within {within:.0f}s; it answered last: {last}"
        )

    def exited(self) -> dict[str, int]:
        return {
            name: code
            for name, process in self.processes.items()
            if (code := process.poll()) is not None
        }

    def stop(self) -> None:
        """SIGTERM each service, SIGKILL what is left after the grace period, or at once when
        asked to stop again (a second Ctrl-C: KeyboardInterrupt, raised again once all are
        gone; it returned with the services still running). A service that died already may
        have left processes of its session (an API's workers, serving on its port): killed."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            else:
                self._kill(process)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        try:
            for process in self.processes.values():
                try:
                    process.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    self._kill(process)
        except KeyboardInterrupt:
            for process in self.processes.values():
                self._kill(process)
            raise
        finally:
            self.processes.clear()
            for log in self.logs:
                log.close()
            self.logs.clear()


def environment(**overrides: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **overrides}
