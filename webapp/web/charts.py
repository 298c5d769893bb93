"""Server-rendered SVG bar charts: geometry here, markup in templates/_macros/charts.html.

The SVG holds only shapes and stretches to its box; the axis labels are HTML around it, so they
keep their size (12 px) whatever the chart's width, and a table gives the numbers to screen
readers."""

from __future__ import annotations

from dataclasses import dataclass

from ..services.dashboard import DailySeries
from .filters import qty

WIDTH, HEIGHT, PAD_TOP = 600, 150, 4
WINDOWS = (7, 30, 90)  # the day ranges a chart can show


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    title: str


@dataclass(frozen=True)
class BarChart:
    key: str
    name: str
    total: str
    days: int
    bars: list[Bar]
    max_label: str
    first_label: str
    last_label: str
    rows: list[tuple[str, str]]  # (day, amount) for the table behind the chart
    allowance_y: float | None = None  # a daily allowance, drawn as a line
    allowance_label: str = ""
    width: int = WIDTH
    height: int = HEIGHT


def window(value: object) -> int:
    """The chart window asked for in the URL: 7, 30 or 90 days (30 for anything else)."""
    try:
        days = int(str(value))
    except ValueError:
        return 30
    return days if days in WINDOWS else 30


def bar_chart(series: DailySeries, daily_allowance: int | None = None) -> BarChart:
    top = max([v for _, v in series.days] + [daily_allowance or 0])
    inner_h = HEIGHT - PAD_TOP
    step = WIDTH / max(1, len(series.days))
    bars = []
    for i, (day, value) in enumerate(series.days):
        h = 0.0 if not top else inner_h * value / top
        if value and h < 1:
            h = 1.0
        bars.append(
            Bar(
                x=round(i * step + step * 0.15, 2),
                y=round(HEIGHT - h, 2),
                w=round(step * 0.7, 2),
                h=round(h, 2),
                title=f"{day.isoformat()}: {qty(value)}",
            )
        )
    days = series.days
    allowance_y = None
    if daily_allowance and top:
        allowance_y = round(HEIGHT - inner_h * daily_allowance / top, 2)
    return BarChart(
        key=series.feature_key,
        name=series.feature_name,
        total=qty(series.total_micros),
        days=len(days),
        bars=bars,
        max_label=qty(top),
        first_label=days[0][0].strftime("%b %d") if days else "",
        last_label=days[-1][0].strftime("%b %d") if days else "",
        rows=[(day.strftime("%b %d"), qty(value)) for day, value in days],
        allowance_y=allowance_y,
        allowance_label=qty(daily_allowance) if daily_allowance else "",
    )
