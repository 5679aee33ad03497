"""Price charts as geometry for hand-written inline SVG (no JavaScript, no library).

Prices are step functions (a price holds until the next one), so every line is a step
path. An item page's chart is drawn in a fixed viewBox that the page stretches to its
box (`preserveAspectRatio="none"`, strokes that do not scale), with its axis labels as
text beside it, so they stay readable on a phone; each point carries a `<title>` (a
tooltip without script), and `rows` is the table that is its text alternative. Nothing
here is inline style or script, which the Content-Security-Policy refuses.

pygal was considered: it embeds a `<style>` element and a script for its tooltips in
every SVG (both refused by our CSP) and has no step interpolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime

from notifier.formatting import money

# Colours with at least 3:1 contrast on white (WCAG's bar for graphics), told apart by
# their dash pattern and marker too, so lines that overlap or a reader who cannot tell
# the colours apart still know which is which.
PALETTE = ("#0b6b4f", "#1a56db", "#b3261e", "#8a4b00", "#6b21a8", "#0e7490")
DASHES = ("", "10 5", "3 4", "12 4 3 4", "1 5", "6 2")
MARKERS = ("circle", "square", "ring", "square-ring")
WIDTHS = (5.0, 3.5, 2.5, 2.0)  # the first lines are wider: one drawn on another shows both
TARGET_COLOUR = "#1c2330"
ALERT_COLOUR = "#b3261e"
MIN_CHART_DAYS = 7
TICKS = 5  # labels on each axis, evenly spaced (so the page can lay them out without style)
NICE_STEPS = (1, 2, 2.5, 5)


@dataclass(frozen=True)
class Point:
    """A marked point in viewBox units, with its tooltip."""

    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Series:
    """One store's line: how it looks, its step path and its change points."""

    label: str
    colour: str
    dash: str
    width: float
    marker: str
    path: str
    points: list[Point]


@dataclass(frozen=True)
class Row:
    """One line of the chart's table: a store's price from a day on."""

    day: str
    store: str
    price: str


@dataclass(frozen=True)
class PriceChart:
    """Everything a template needs to draw an item's chart and its text alternative."""

    width: int
    height: int
    series: list[Series]
    y_labels: list[str]  # top to bottom, at 0, 25, 50, 75 and 100% of the height
    x_labels: list[str]  # left to right, at 0, 25, 50, 75 and 100% of the width
    grid_x: list[float]
    grid_y: list[float]
    target: Point | None
    alerts: list[Point]
    description: str
    first_day: str
    last_day: str
    days: int
    rows: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class Sparkline:
    """A small step line of one series (no axes; its title says what it shows)."""

    width: int
    height: int
    path: str
    last: tuple[float, float]
    description: str


@dataclass(frozen=True)
class Alert:
    """A price the shopper was alerted at, and when."""

    at: datetime
    price_in_cents: int
    store_name: str


def nice_scale(low: int, high: int) -> tuple[int, int]:
    """(bottom, step) in cents: TICKS evenly spaced round values covering low..high.

    A flat or nearly flat series gets some room around it (a fifth of its price, at
    least 40 cents), so a one-cent change does not fill the height.
    """
    room = max(40, high // 5)
    if high - low < room:
        low, high = max(0, (low + high) // 2 - room // 2), (low + high) // 2 + room // 2
    span = max(high - low, 1)
    raw = span / (TICKS - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for m in (*NICE_STEPS, 10):
        step = max(1, round(m * magnitude))
        bottom = (low // step) * step
        if bottom + step * (TICKS - 1) >= high:
            return max(0, bottom), step
    return max(0, low), math.ceil(span / (TICKS - 1))  # not reached


def changes(values: list[int | None]) -> list[tuple[int, int]]:
    """(day index, value) wherever a series takes a new value (its first one included)."""
    out: list[tuple[int, int]] = []
    for i, v in enumerate(values):
        if v is not None and (not out or out[-1][1] != v):
            out.append((i, v))
    return out


def step_path(
    steps: list[tuple[int, int]], days: int, x: Scale, y: Scale, end: float | None = None
) -> str:
    """An SVG path through a step function: flat until each change, then straight up/down."""
    if not steps:
        return ""
    first_day, first_value = steps[0]
    parts = [f"M{x(first_day):.1f} {y(first_value):.1f}"]
    for day, value in steps[1:]:
        parts.append(f"H{x(day):.1f}V{y(value):.1f}")
    parts.append(f"H{x(days) if end is None else end:.1f}")
    return "".join(parts)


class Scale:
    """A linear map from data to viewBox units."""

    def __init__(self, lo: float, hi: float, out_lo: float, out_hi: float) -> None:
        self.lo, self.hi, self.out_lo, self.out_hi = lo, hi, out_lo, out_hi

    def __call__(self, v: float) -> float:
        span = (self.hi - self.lo) or 1
        return self.out_lo + (v - self.lo) * (self.out_hi - self.out_lo) / span


def short_date(d: date) -> str:
    """ "Mar 3" (the chart's date labels)."""
    return f"{d.strftime('%b')} {d.day}"


def sparkline(values: list[int | None], days: list[date], what: str) -> Sparkline | None:
    """A small step chart of one series (an item's best price by day).

    None when it would show fewer than two prices: the page says "one price so far"
    instead of drawing a flat dash.
    """
    steps = changes(values)
    if len(steps) < 2:
        return None
    known = [v for v in values if v is not None]
    low, high = min(known), max(known)
    width, height, pad = 120, 32, 3
    x = Scale(0, len(values), pad, width - pad)
    y = Scale(low, high, height - pad, pad)
    path = step_path(steps, len(values), x, y)
    description = (
        f"{what} over {len(days)} days: from {money(known[0])} to {money(known[-1])}, "
        f"lowest {money(low)}, highest {money(high)}"
    )
    return Sparkline(width, height, path, (width - pad, y(known[-1])), description)


def price_chart(
    by_store: dict[str, list[int | None]],
    days: list[date],
    item: str,
    target_in_cents: int | None = None,
    alerts: list[Alert] | None = None,
    window_days: int | None = None,
) -> PriceChart | None:
    """An item's chart: one step line per store from the first day with a price, the
    shopper's target and the prices they were alerted at; None without any price."""
    known_days = [i for s in by_store.values() for i, v in enumerate(s) if v is not None]
    if not known_days:
        return None
    start = max(0, min(min(known_days), len(days) - MIN_CHART_DAYS))
    days = days[start:]
    by_store = {store: s[start:] for store, s in sorted(by_store.items())}
    n = len(days)
    first = days[0]
    shown_alerts = [
        a for a in alerts or [] if 0 <= (a.at.date() - first).days < n
    ]  # alerts older than the chart's first day are not drawn
    values = [v for s in by_store.values() for v in s if v is not None]
    extent = values + [a.price_in_cents for a in shown_alerts]
    if target_in_cents is not None:
        extent.append(target_in_cents)
    bottom, step = nice_scale(min(extent), max(extent))
    top = bottom + step * (TICKS - 1)
    width, height = 1000, 300
    x = Scale(0, n, 0, width)
    y = Scale(bottom, top, height, 0)

    series = []
    rows: list[Row] = []
    parts = []
    for i, (store, store_values) in enumerate(by_store.items()):
        steps = changes(store_values)
        if not steps:
            continue
        points = [
            Point(x(d), y(v), f"{store}: {money(v)} from {short_date(days[d])}") for d, v in steps
        ]
        series.append(
            Series(
                store,
                PALETTE[i % len(PALETTE)],
                DASHES[i % len(DASHES)],
                WIDTHS[min(i, len(WIDTHS) - 1)],
                MARKERS[i % len(MARKERS)],
                step_path(steps, n, x, y),
                points,
            )
        )
        rows += [Row(days[d].isoformat(), store, money(v)) for d, v in steps]
        now_value = steps[-1][1]
        parts.append(f"{store} {money(now_value)} now, lowest {money(min(v for _, v in steps))}")
    rows.sort(key=lambda r: (r.day, r.store))

    target = None
    if target_in_cents is not None:
        target = Point(0, y(target_in_cents), f"Your target: {money(target_in_cents)}")
    drawn_alerts = [
        Point(
            x((a.at.date() - first).days + _day_fraction(a.at)),
            y(a.price_in_cents),
            f"You were alerted {short_date(a.at.date())}: {money(a.price_in_cents)}"
            f" at {a.store_name}",
        )
        for a in shown_alerts
    ]
    window = f"{window_days} days" if window_days else f"{n} days"
    description = f"Price of {item} at each store over the last {window}: " + "; ".join(parts)
    if target_in_cents is not None:
        description += f"; your target {money(target_in_cents)}"
    if drawn_alerts:
        description += f"; you were alerted {len(drawn_alerts)} time(s)"
    quarter = [round(n * f / (TICKS - 1)) for f in range(TICKS)]
    return PriceChart(
        width=width,
        height=height,
        series=series,
        y_labels=[money(top - step * i) for i in range(TICKS)],
        x_labels=[short_date(days[min(q, n - 1)]) for q in quarter],
        grid_x=[x(q) for q in quarter],
        grid_y=[y(bottom + step * i) for i in range(TICKS)],
        target=target,
        alerts=drawn_alerts,
        description=description,
        first_day=days[0].isoformat(),
        last_day=days[-1].isoformat(),
        days=n,
        rows=rows,
    )


def _day_fraction(when: datetime) -> float:
    """How far into its (UTC) day a time is, 0 to 1."""
    return (when.hour * 3600 + when.minute * 60 + when.second) / 86400
