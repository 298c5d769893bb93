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
    rows: list[tuple[str, ...]]  # (day, amount[, used in the period so far]) for the table
    allowance_y: float | None = None  # the allowance, drawn as a dashed line
    allowance_label: str = ""  # "1,000 a day", "5,000 a month"
    in_period_points: str = ""  # SVG polyline points: used in the period so far, each day
    in_period_label: str = ""  # "used this month so far"
    width: int = WIDTH
    height: int = HEIGHT


# How an allowance of each reset period reads, and what its running line is called.
PERIOD_WORDS = {
    "day": ("a day", ""),
    "week": ("a week", "used this week so far"),
    "month": ("a month", "used this month so far"),
    "year": ("a year", "used this year so far"),
    "never": ("in all", "used so far"),
}


def window(value: object) -> int:
    """The chart window asked for in the URL: 7, 30 or 90 days (30 for anything else)."""
    try:
        days = int(str(value))
    except ValueError:
        return 30
    return days if days in WINDOWS else 30


def bar_chart(series: DailySeries) -> BarChart:
    """Daily bars. With an allowance (one customer's chart): a daily allowance is a line the
    bars compare with; an allowance of a longer period is compared with what the period used so
    far, a running line that starts again at each period's start, drawn with the bars."""
    allowance = series.allowance_micros
    running = series.in_period or []
    top = max([v for _, v in series.days] + running + [allowance or 0])
    inner_h = HEIGHT - PAD_TOP
    step = WIDTH / max(1, len(series.days))

    def y(value: int) -> float:
        return round(HEIGHT - (inner_h * value / top if top else 0), 2)

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
    per, running_words = PERIOD_WORDS.get(series.reset_period or "day", ("", ""))
    points = []
    for i, value in enumerate(running):  # a step line: flat over each day, a jump between
        points += [f"{round(i * step, 2)},{y(value)}", f"{round((i + 1) * step, 2)},{y(value)}"]
    rows: list[tuple[str, ...]] = [(day.strftime("%b %d"), qty(value)) for day, value in days]
    if running:
        rows = [(*row, qty(value)) for row, value in zip(rows, running, strict=True)]
    return BarChart(
        key=series.feature_key,
        name=series.feature_name,
        total=qty(series.total_micros),
        days=len(days),
        bars=bars,
        max_label=qty(top),
        first_label=days[0][0].strftime("%b %d") if days else "",
        last_label=days[-1][0].strftime("%b %d") if days else "",
        rows=rows,
        allowance_y=y(allowance) if allowance and top else None,
        allowance_label=f"{qty(allowance)} {per}" if allowance else "",
        in_period_points=" ".join(points),
        in_period_label=running_words if running else "",
    )
