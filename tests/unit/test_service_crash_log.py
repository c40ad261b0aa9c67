"""A long-running service: an unexpected error that ends it is said through its log handler (in
JSON mode, one JSON object per line, the traceback inside it), and it may open as many files as
the hard limit allows."""

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from cli.services import OPEN_FILES_WITHOUT_A_HARD_LIMIT, open_files_up_to_the_hard_limit

ROOT = Path(__file__).resolve().parents[2]
CRASHING_SERVICE = """
import typer
from cli.services import serve
from contracts.logging import configure_logging

configure_logging("json", "INFO")

async def main() -> None:
    raise ExceptionGroup("startup", [ConnectionError("CONNECTION_FORCED - broker shutdown")])

try:
    serve(main())
except typer.Exit as stopped:
    raise SystemExit(stopped.exit_code)
"""


def run_service(script: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_an_error_that_ends_a_service_is_one_json_line_and_exit_code_1() -> None:
    """A consumer whose broker closed its connections while it started (compose's restart)
    died on an exception group whose traceback Python printed as dozens of plain lines, among
    the JSON ones an operator pipes to jq (containers review)."""
    done = run_service(CRASHING_SERVICE)
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # each line one object
    [crash] = [line for line in lines if line["level"] == "CRITICAL"]
    assert "CONNECTION_FORCED" in json.dumps(crash), crash


OPEN_FILES_OF_A_SERVICE = """
import resource
from cli.services import serve

async def main() -> None:
    print(*resource.getrlimit(resource.RLIMIT_NOFILE))

resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
serve(main())
"""


def test_a_service_may_open_as_many_files_as_the_hard_limit_allows() -> None:
    """A container's soft limit is often 1,024, and each connection an open file: the webhook
    service's, to 1,200 merchants' hosts, failed with "Too many open files" (scale review)."""
    done = run_service(OPEN_FILES_OF_A_SERVICE)
    assert done.returncode == 0, done.stderr
    soft, hard = done.stdout.split()
    assert soft == hard != "256"


def test_a_service_on_a_system_with_no_hard_limit_takes_the_kernels_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """macOS: an unlimited hard limit, which the kernel refuses as a soft one; the soft limit
    stayed at 256 (diff review)."""
    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, resource.RLIM_INFINITY))
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: set_to.append(limits))

    open_files_up_to_the_hard_limit()

    assert set_to == [(OPEN_FILES_WITHOUT_A_HARD_LIMIT, resource.RLIM_INFINITY)]
