"""Helper processes of the benchmark (webhook receiver, trivial app) and what /proc says about
any process tree: resident memory, CPU time, and time spent runnable but waiting for a core."""

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_SECONDS = 30.0


@dataclass
class BackgroundProcess:
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, command: Sequence[str], log_path: Path) -> "BackgroundProcess":
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return cls(process)

    async def wait_for_port(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.process.args!r} exited with {self.process.returncode}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.process.args!r} did not listen on {port} in time")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(root: int, children: dict[int, list[int]]) -> list[int]:
    """`root` and its descendants (uvicorn workers are children of the API's process)."""
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def pids_named(names: Iterable[str]) -> list[int]:
    """Processes whose command name is one of `names` (the database and broker servers)."""
    wanted = set(names)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in wanted:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except (OSError, IndexError):
            continue
    return total


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of the processes (utime and stime, fields 14 and 15)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def core_wait_seconds(pids: Iterable[int], proc: Path = Path("/proc")) -> float:
    """Time the processes' threads spent runnable but waiting for a core (the run queue's delay,
    /proc/<pid>/task/<tid>/schedstat's second field, in nanoseconds). A process or thread gone
    meanwhile counts nothing, so a thread that ends takes its wait with it: exact for our
    services (one working thread each), a lower bound for a server whose connection threads
    come and go."""
    nanoseconds = 0
    for pid in pids:
        try:
            tasks = list((proc / str(pid) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                nanoseconds += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return nanoseconds / 1e9
