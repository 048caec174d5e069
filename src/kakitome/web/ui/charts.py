"""Charts as server-rendered inline SVG: no script, no build step, readable without CSS.

Each chart is an ``<svg role="img">`` with a ``<title>`` and ``<desc>`` for screen readers;
every bar carries a ``<title>`` with its numbers (a tooltip on hover). Labels are escaped
here (``markupsafe.escape``): domains and other text come from outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 720
HEIGHT = 220
PAD_LEFT = 48
PAD_BOTTOM = 28
PAD_TOP = 10


@dataclass(frozen=True, slots=True)
class Series:
    name: str  # shown in the legend and tooltips
    css: str  # class of the bars (colours live in the stylesheet)
    values: Sequence[float]


def _ticks(maximum: float) -> list[float]:
    if maximum <= 0:
        return [0.0, 1.0]
    step = 10 ** len(str(int(maximum))) / 10
    while maximum / step > 5:
        step *= 2
    ticks = [0.0]
    while ticks[-1] < maximum:
        ticks.append(ticks[-1] + step)
    return ticks


def stacked_bars(title: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """Stacked columns, one per label (time bucket)."""
    count = max(len(labels), 1)
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    ticks = _ticks(max(totals, default=0))
    top = ticks[-1] or 1
    plot_w = WIDTH - PAD_LEFT - 8
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = plot_w / count
    bar_w = max(slot * 0.7, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in ticks:
        y = PAD_TOP + plot_h - tick / top * plot_h
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{tick:g}</text>'
        )
    label_every = max(1, count // 8)
    for i, label in enumerate(labels):
        x = PAD_LEFT + i * slot + (slot - bar_w) / 2
        y = PAD_TOP + plot_h
        tip = [f"{escape(label)}"] + [f"{escape(s.name)}: {s.values[i]:g}" for s in series]
        parts.append(f"<g><title>{' · '.join(str(t) for t in tip)}</title>")
        for s in series:
            h = s.values[i] / top * plot_h
            if h <= 0:
                continue
            y -= h
            parts.append(
                f'<rect class="{escape(s.css)}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"/>'
            )
        parts.append("</g>")
        if i % label_every == 0:
            parts.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def share_line(
    title: str, labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float | None]]]
) -> Markup:
    """Lines of shares (0..1) over time; a gap where a bucket had no deliveries."""
    count = max(len(labels), 1)
    plot_w = WIDTH - PAD_LEFT - 8
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = plot_w / count
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for pct in (0, 25, 50, 75, 100):
        y = PAD_TOP + plot_h - pct / 100 * plot_h
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{pct}%</text>'
        )
    for name, css, values in series:
        points: list[str] = []
        segments: list[list[str]] = []
        for i, value in enumerate(values):
            if value is None:
                if points:
                    segments.append(points)
                points = []
                continue
            x = PAD_LEFT + i * slot + slot / 2
            y = PAD_TOP + plot_h - value * plot_h
            points.append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle class="{escape(css)}" cx="{x:.1f}" cy="{y:.1f}" r="3">'
                f"<title>{escape(labels[i])} · {escape(name)}: {value * 100:.1f}%</title></circle>"
            )
        if points:
            segments.append(points)
        for segment in segments:
            parts.append(f'<polyline class="{escape(css)}" points="{" ".join(segment)}"/>')
    label_every = max(1, count // 8)
    for i, label in enumerate(labels):
        if i % label_every == 0:
            x = PAD_LEFT + i * slot + slot / 2
            parts.append(
                f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def share_bars(title: str, rows: Sequence[tuple[str, float | None, int]]) -> Markup:
    """Horizontal bars: one per domain, its share (0..1) and the count it is of."""
    row_h = 26
    height = max(len(rows), 1) * row_h + 8
    label_w = 220
    plot_w = WIDTH - label_w - 70
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, share, count) in enumerate(rows):
        y = 4 + i * row_h
        shown = label if len(label) <= 32 else label[:31] + "…"
        parts.append(
            f'<text class="axis" x="{label_w - 8}" y="{y + 17}" '
            f'text-anchor="end">{escape(shown)}</text>'
        )
        parts.append(
            f'<rect class="track" x="{label_w}" y="{y + 4}" '
            f'width="{plot_w}" height="{row_h - 10}"/>'
        )
        if share is not None:
            parts.append(
                f'<rect class="ok" x="{label_w}" y="{y + 4}" width="{share * plot_w:.1f}" '
                f'height="{row_h - 10}"><title>{escape(label)}: {share * 100:.1f}% '
                f"({count:g})</title></rect>"
            )
        text = "—" if share is None else f"{share * 100:.0f}%"
        parts.append(f'<text class="axis" x="{label_w + plot_w + 8}" y="{y + 17}">{text}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
