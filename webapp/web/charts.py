"""Server-rendered SVG bar charts: geometry here, markup in templates/_macros/charts.html."""

from __future__ import annotations

from dataclasses import dataclass

from ..services.dashboard import DailySeries
from .filters import qty

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 600, 150, 44, 20, 8


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
    bars: list[Bar]
    max_label: str
    first_label: str
    last_label: str
    width: int = WIDTH
    height: int = HEIGHT
    pad_left: int = PAD_LEFT
    base_y: int = HEIGHT - PAD_BOTTOM


def bar_chart(series: DailySeries) -> BarChart:
    top = max((v for _, v in series.days), default=0)
    inner_w = WIDTH - PAD_LEFT
    inner_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    step = inner_w / max(1, len(series.days))
    bars = []
    for i, (day, value) in enumerate(series.days):
        h = 0.0 if not top else inner_h * value / top
        if value and h < 1:
            h = 1.0
        bars.append(
            Bar(
                x=round(PAD_LEFT + i * step + step * 0.15, 2),
                y=round(HEIGHT - PAD_BOTTOM - h, 2),
                w=round(step * 0.7, 2),
                h=round(h, 2),
                title=f"{day.isoformat()}: {qty(value)}",
            )
        )
    days = series.days
    return BarChart(
        key=series.feature_key,
        name=series.feature_name,
        total=qty(series.total_micros),
        bars=bars,
        max_label=qty(top),
        first_label=days[0][0].strftime("%b %d") if days else "",
        last_label=days[-1][0].strftime("%b %d") if days else "",
    )
