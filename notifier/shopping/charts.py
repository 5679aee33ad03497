"""Price charts as geometry for small, hand-written inline SVG (no JavaScript, no library).

A chart is a few polylines in a fixed viewBox plus a sentence that says what it shows,
which the template puts in the SVG's <title> (its text alternative).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from notifier.formatting import money

PALETTE = ("#0b6b4f", "#1a56db", "#b3261e", "#8a4b00", "#6b21a8", "#0e7490")


@dataclass(frozen=True)
class Line:
    """One series: its label, colour and the polyline's points in viewBox units."""

    label: str
    colour: str
    points: str
    last: tuple[float, float] | None  # where the latest value is drawn (a dot)


@dataclass(frozen=True)
class Chart:
    """What a template needs to draw a chart."""

    width: int
    height: int
    lines: list[Line]
    description: str
    low_label: str
    high_label: str
    first_day: str
    last_day: str


def _extent(series: list[list[int | None]]) -> tuple[int, int] | None:
    values = [v for s in series for v in s if v is not None]
    if not values:
        return None
    low, high = min(values), max(values)
    return (low, high) if high > low else (low - 1, high + 1)


def _points(
    values: list[int | None], low: int, high: int, width: int, height: int, pad: float
) -> tuple[str, tuple[float, float] | None]:
    step = (width - 2 * pad) / max(1, len(values) - 1)
    span = high - low
    coords = [
        (pad + i * step, pad + (height - 2 * pad) * (high - v) / span)
        for i, v in enumerate(values)
        if v is not None
    ]
    if len(coords) == 1:  # one known day: a flat stub, so there is something to see
        x, y = coords[0]
        coords = [(max(pad, x - max(step, width / 8)), y), (x, y)]
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in coords), coords[-1] if coords else None


def sparkline(values: list[int | None], days: list[date], what: str) -> Chart | None:
    """A small chart of one series (an item's best price by day); None with no data."""
    extent = _extent([values])
    if extent is None:
        return None
    low, high = extent
    points, last = _points(values, low, high, 120, 32, 3)
    known = [v for v in values if v is not None]
    description = (
        f"{what} over {len(days)} days: from {money(known[0])} to {money(known[-1])}, "
        f"lowest {money(min(known))}, highest {money(max(known))}"
    )
    return Chart(
        120,
        32,
        [Line(what, PALETTE[0], points, last)],
        description,
        money(min(known)),
        money(max(known)),
        days[0].isoformat(),
        days[-1].isoformat(),
    )


MIN_CHART_DAYS = 7


def price_chart(by_store: dict[str, list[int | None]], days: list[date], item: str) -> Chart | None:
    """A larger chart with one line per store, from the first day with a price; None without."""
    extent = _extent(list(by_store.values()))
    if extent is None:
        return None
    known = [i for s in by_store.values() for i, v in enumerate(s) if v is not None]
    start = max(0, min(min(known), len(days) - MIN_CHART_DAYS))
    by_store = {store: s[start:] for store, s in by_store.items()}
    days = days[start:]
    low, high = extent
    lines = []
    parts = []
    for i, (store, values) in enumerate(sorted(by_store.items())):
        points, last = _points(values, low, high, 640, 220, 12)
        lines.append(Line(store, PALETTE[i % len(PALETTE)], points, last))
        known = [v for v in values if v is not None]
        if known:
            parts.append(f"{store} {money(known[-1])} now, lowest {money(min(known))}")
    description = f"Price of {item} at each store over {len(days)} days: " + "; ".join(parts)
    every = [v for s in by_store.values() for v in s if v is not None]
    return Chart(
        640,
        220,
        lines,
        description,
        money(min(every)),
        money(max(every)),
        days[0].isoformat(),
        days[-1].isoformat(),
    )
