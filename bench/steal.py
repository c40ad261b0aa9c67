"""CPU steal from /proc/stat: the share of the machine's CPU time the hypervisor gave to someone
else. On a shared host it swings from a few percent to more than half, and every absolute time
the bench measures stretches with it; ratios measured in the same run stretch much less."""

import math
from dataclasses import dataclass
from pathlib import Path

# The `cpu` line's first eight columns: user nice system idle iowait irq softirq steal. The guest
# columns after them are already counted in user and nice.
STEAL_COLUMN = 7
COUNTED_COLUMNS = 8


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative jiffies of all CPUs since boot."""

    total: int
    steal: int

    @classmethod
    def parse(cls, proc_stat: str) -> "CpuTimes":
        line = next(line for line in proc_stat.splitlines() if line.startswith("cpu "))
        columns = [int(value) for value in line.split()[1 : COUNTED_COLUMNS + 1]]
        return cls(total=sum(columns), steal=columns[STEAL_COLUMN])

    @classmethod
    def now(cls) -> "CpuTimes":
        return cls.parse(Path("/proc/stat").read_text())


def steal_share(start: CpuTimes, end: CpuTimes) -> float:
    """Stolen share of all CPU time between two readings (NaN when no time passed)."""
    elapsed = end.total - start.total
    return (end.steal - start.steal) / elapsed if elapsed > 0 else math.nan
