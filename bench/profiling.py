"""py-spy on the services while a phase runs: collapsed stacks on disk (open them in speedscope)
and a short table of where the CPU went."""

import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUR_PACKAGES = ("api_service", "processor_service", "webhook_service", "contracts", "cli")
# The event loop's thread: `--threads` names each stack's thread in a pseudo-frame.
MAIN_THREAD = "): MainThread;"
# Where a sample's leaf frame lives, by the first part of its (shortened) path.
LIBRARIES = {
    "sqlalchemy": "SQLAlchemy",
    "asyncmy": "asyncmy",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "fastapi": "FastAPI/Starlette",
    "starlette": "FastAPI/Starlette",
    "uvicorn": "uvicorn",
    "faststream": "FastStream",
    "aio_pika": "aio-pika/aiormq/pamqp",
    "aiormq": "aio-pika/aiormq/pamqp",
    "pamqp": "aio-pika/aiormq/pamqp",
    "logging": "logging",
    "json": "json",
    "asyncio": "asyncio",
}


def py_spy() -> str:
    return str(Path(sys.executable).parent / "py-spy")


@dataclass
class Recording:
    name: str
    output: Path
    process: subprocess.Popen[bytes]

    def wait(self) -> None:
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def record(name: str, pid: int, seconds: float, directory: Path) -> Recording:
    """Sample `pid` and its children (uvicorn workers) for `seconds`, without pausing it."""
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / f"{name}.collapsed.txt"
    command = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(int(seconds), 1)),
        "--rate",
        "100",
        "--format",
        "raw",
        "--nolineno",
        "--subprocesses",
        "--threads",
        "--nonblocking",
        "--output",
        str(output),
    ]
    log = (directory / f"{name}.py-spy.log").open("wb")
    return Recording(name, output, subprocess.Popen(command, stdout=log, stderr=log))


def _is_code(frame: str) -> bool:
    """Not the `process N:...` and `thread (N): name` pseudo-frames (--subprocesses, --threads)."""
    return "(" in frame and not frame.startswith(("process ", "thread ("))


def _function(frame: str) -> str:
    """`name (path/file.py)` -> `file.py:name` with the package path kept short."""
    name, _, where = frame.partition(" (")
    return f"{where.rstrip(')')}:{name}"


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Self time per package and per leaf function, and inclusive time of our own functions, in %
    of the event-loop thread's samples."""
    self_time: Counter[str] = Counter()
    by_library: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0, "libraries": [], "self": [], "ours": []}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if MAIN_THREAD not in stack:
            continue  # worker threads (anyio, logging) mostly sit idle in Condition.wait
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";") if _is_code(frame)]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        by_library[_library(frames[-1])] += count
        for frame in set(frames):
            if frame.startswith(OUR_PACKAGES) and not frame.startswith("cli/"):  # launchers
                inclusive[frame] += count

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "percent": round(100 * count / total, 1)}
            for name, count in counter.most_common(top)
        ]

    return {
        "samples": total,
        "libraries": table(by_library),
        "self": table(self_time),
        "ours": table(inclusive),
    }


def _library(function: str) -> str:
    root = function.split("/", 1)[0].split(".py", 1)[0].split(":", 1)[0]
    if root in OUR_PACKAGES:
        return "our code"
    return LIBRARIES.get(root, root)
