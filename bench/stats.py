"""Percentiles and per-second buckets (pure)."""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks of an ascending sequence."""
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class LatencySummary:
    """Milliseconds."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of_seconds(cls, samples: Iterable[float]) -> "LatencySummary":
        ordered = sorted(value * 1000 for value in samples)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 0.50),
            p95=percentile(ordered, 0.95),
            p99=percentile(ordered, 0.99),
            max=ordered[-1],
            mean=sum(ordered) / len(ordered),
        )


def per_second(times: Iterable[float], start: float, end: float) -> list[int]:
    """How many of `times` fall in each whole second of [start, end)."""
    buckets = [0] * max(math.ceil(end - start), 1)
    for moment in times:
        index = math.floor(moment - start)
        if 0 <= index < len(buckets):
            buckets[index] += 1
    return buckets


def percentile_per_second(
    samples: Iterable[tuple[float, float]], start: float, end: float, fraction: float
) -> list[float]:
    """The `fraction` percentile (ms) of (time, seconds) samples in each second; NaN when empty."""
    buckets: list[list[float]] = [[] for _ in range(max(math.ceil(end - start), 1))]
    for moment, value in samples:
        index = math.floor(moment - start)
        if 0 <= index < len(buckets):
            buckets[index].append(value * 1000)
    return [percentile(sorted(bucket), fraction) for bucket in buckets]


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.nan


def ratio(value: float, floor: float) -> float:
    return value / floor if floor > 0 and not math.isnan(floor) else math.nan
