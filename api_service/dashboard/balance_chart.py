"""The balance over time as an inline SVG chart, drawn on the server: no chart library, no script.
Pure: ledger entries in, coordinates out (the template draws them).

Each ledger entry carries the balance it left behind, so the series is a step line: flat until
the next movement. The x axis is time (movements in the same instant stack up vertically); the
y axis spans the values shown, not zero, so a 1,500 payout is visible on a 1,000,000 balance.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from api_service.dashboard.rendering import money, parse_time

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 92, 16, 14, 30
GRID_LINES = 4


@dataclass(frozen=True)
class Point:
    at: datetime
    balance: Decimal
    available: Decimal


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    balance_line: str  # SVG polyline points
    available_line: str
    grid: list[tuple[float, str]]  # (y, label)
    times: list[tuple[float, str, str]]  # (x, label, text-anchor)
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT


def points_of(entries: list[dict[str, Any]]) -> list[Point]:
    """The history's entries (newest first, as the API lists them), oldest first."""
    return [
        Point(
            parse_time(entry["createdAt"]),
            Decimal(entry["balanceAfter"]),
            Decimal(entry["availableAfter"]),
        )
        for entry in reversed(entries)
        if entry["balanceAfter"] is not None and entry["availableAfter"] is not None
    ]


def _scale(low: float, high: float, start: float, end: float) -> Callable[[float], float]:
    """Pixel coordinates (floats: positions on a drawing, never amounts)."""
    span = (high - low) or 1.0
    return lambda value: start + (value - low) / span * (end - start)


def _step_line(xs: list[float], ys: list[float], right_edge: float) -> str:
    coordinates = [(xs[0], ys[0])]
    for x, y, previous_y in zip(xs[1:], ys[1:], ys, strict=False):
        coordinates += [(x, previous_y), (x, y)]
    coordinates.append((right_edge, ys[-1]))
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)


def balance_chart(points: list[Point]) -> Chart | None:
    if not points:
        return None
    values = [p.balance for p in points] + [p.available for p in points]
    low, high = min(values), max(values)
    margin = (high - low) * Decimal("0.08") or max(abs(high) / 100, Decimal(1))
    low, high = low - margin, high + margin
    y_of = _scale(float(low), float(high), HEIGHT - BOTTOM, TOP)
    first, last = points[0].at.timestamp(), points[-1].at.timestamp()
    if last > first:
        x_of = _scale(first, last, LEFT, WIDTH - RIGHT - 8)
        xs = [x_of(p.at.timestamp()) for p in points]
    else:  # one instant: spread the movements evenly
        x_of = _scale(0, max(len(points) - 1, 1), LEFT, WIDTH - RIGHT - 8)
        xs = [x_of(index) for index in range(len(points))]
    levels = [low + (high - low) * step / GRID_LINES for step in range(GRID_LINES + 1)]
    times = [(float(LEFT), f"{points[0].at:%Y-%m-%d %H:%M}", "start")]
    if len(points) > 1:
        times.append((float(WIDTH - RIGHT), f"{points[-1].at:%Y-%m-%d %H:%M}", "end"))
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        balance_line=_step_line(xs, [y_of(float(p.balance)) for p in points], WIDTH - RIGHT),
        available_line=_step_line(xs, [y_of(float(p.available)) for p in points], WIDTH - RIGHT),
        grid=[(y_of(float(level)), money(level.quantize(Decimal("0.01")))) for level in levels],
        times=times,
    )
