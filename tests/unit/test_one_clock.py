"""The services read the time of day through one clock, the database's as this host measured it
(`contracts.db.database_clock`): a direct read of the host's wall clock is a time another host
may disagree with by minutes (clock-skew review). The error envelope's `timestamp` and the daily
quota's `Retry-After` read it directly."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("api_service", "processor_service", "webhook_service", "contracts", "cli")
WALL_CLOCK_READ = re.compile(r"\b(datetime\.(now|utcnow|today)|date\.today|time\.time)\(")
# The one reader; and the container healthcheck, which compares its own host's file times.
HOST_CLOCK_READERS = {"contracts/db/database_clock.py", "cli/healthcheck.py"}


def test_only_the_database_clock_reads_the_host_s_wall_clock() -> None:
    readers = {
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for package in SERVICES
        for path in (ROOT / package).rglob("*.py")
        if str(path.relative_to(ROOT)) not in HOST_CLOCK_READERS
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if WALL_CLOCK_READ.search(line)
    }

    assert readers == set()


def test_the_pattern_finds_a_wall_clock_read() -> None:
    assert WALL_CLOCK_READ.search('stamp = datetime.now(UTC).isoformat(timespec="seconds")')
    assert WALL_CLOCK_READ.search("left = 86_400 - time.time() % 86_400")
    assert not WALL_CLOCK_READ.search("started = time.monotonic()")
