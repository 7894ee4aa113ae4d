"""Tiny inline-SVG charts (lines, steps, grouped bars, heatmaps) for standalone HTML reports.

Hand-written SVG renders a whole report in milliseconds where matplotlib needs seconds per figure, and needs
no network, fonts or files. Every text is escaped; every number drawn comes from the JSON-able report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

REAL = "#1f4e79"
SYN = "#d9822b"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
FONT = 'font-family="Helvetica,Arial,sans-serif"'


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


class Canvas:
    """One chart: plot area with axes inside an SVG of ``width`` x ``height`` pixels."""

    def __init__(self, width: int, height: int, *, left: int = 48, right: int = 12, top: int = 28, bottom: int = 40):
        self.w, self.h = width, height
        self.l, self.r, self.t, self.b = left, right, top, bottom
        self.parts: list[str] = []
        self.x0 = self.x1 = self.y0 = self.y1 = 0.0

    @property
    def pw(self) -> float:
        return self.w - self.l - self.r

    @property
    def ph(self) -> float:
        return self.h - self.t - self.b

    def scale(self, x0: float, x1: float, y0: float, y1: float) -> None:
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 1)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1)

    def X(self, x: float) -> float:
        return self.l + (x - self.x0) / (self.x1 - self.x0) * self.pw

    def Y(self, y: float) -> float:
        return self.t + self.ph - (y - self.y0) / (self.y1 - self.y0) * self.ph

    def text(self, x: float, y: float, s: str, *, size: int = 10, anchor: str = "middle", rotate: float = 0,
             weight: str = "normal", color: str = "#222") -> None:
        tr = f' transform="rotate({rotate:.0f} {x:.1f} {y:.1f})"' if rotate else ""
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
            f'fill="{color}" {FONT}{tr}>{escape(s)}</text>'
        )

    def axes(self, title: str, xlabel: str = "", ylabel: str = "", *, xticks: bool | Sequence[float] = True,
             yticks: bool = True) -> None:
        """Frame, title, labels and ticks; ``xticks`` may list the x tick values (e.g. whole round numbers)."""
        p = self.parts
        p.append(f'<rect x="{self.l}" y="{self.t}" width="{self.pw:.1f}" height="{self.ph:.1f}" fill="none" stroke="#999" stroke-width="0.8"/>')
        if yticks:
            for v in nice_ticks(self.y0, self.y1):
                y = self.Y(v)
                p.append(f'<line x1="{self.l - 3}" x2="{self.l + self.pw:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee" stroke-width="0.8"/>')
                self.text(self.l - 5, y + 3, _fmt(v), size=9, anchor="end")
        if xticks is not False:
            for v in (nice_ticks(self.x0, self.x1) if xticks is True else list(xticks)):
                x = self.X(v)
                p.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{self.t + self.ph:.1f}" y2="{self.t + self.ph + 3:.1f}" stroke="#999"/>')
                self.text(x, self.t + self.ph + 13, _fmt(v), size=9)
        self.text(self.l + self.pw / 2, 16, title, size=11, weight="bold")
        if xlabel:
            self.text(self.l + self.pw / 2, self.t + self.ph + 34, xlabel, size=10)
        if ylabel:
            self.text(12, self.t + self.ph / 2, ylabel, size=10, rotate=-90)

    def polyline(self, xs: Sequence[float], ys: Sequence[float], color: str, *, dash: bool = False, step: bool = False,
                 width: float = 1.6) -> None:
        pts: list[tuple[float, float]] = []
        prev = None
        for x, y in zip(xs, ys):
            if y is None or not math.isfinite(y):
                continue
            if step and prev is not None:
                pts.append((self.X(x), self.Y(prev)))
            pts.append((self.X(x), self.Y(y)))
            prev = y
        if not step and len(pts) <= 30:
            # Markers: a single round must still show as a point, and few points read better marked.
            self.parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in pts]
        if len(pts) < 2:
            return
        d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        da = ' stroke-dasharray="5,3"' if dash else ""
        self.parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="{width}"{da}/>')

    def legend(self, items: Sequence[tuple[str, str, bool]], *, x: float | None = None, y: float | None = None,
               boxed: bool = True) -> None:
        x = self.l + self.pw - 150 if x is None else x
        y = self.t + 10 if y is None else y
        if items and boxed:
            # A light backing keeps the labels readable where a line runs under the legend.
            width = 30 + 5.2 * max(len(label) for label, _, _ in items)  # ~5.2 px per character at size 9
            self.parts.append(f'<rect x="{x - 4:.1f}" y="{y - 8:.1f}" width="{width:.0f}" height="{13 * len(items) + 3}" '
                              'fill="#fff" fill-opacity="0.85" stroke="#ddd" stroke-width="0.6"/>')
        for i, (label, color, dash) in enumerate(items):
            yy = y + 13 * i
            da = ' stroke-dasharray="5,3"' if dash else ""
            self.parts.append(f'<line x1="{x:.1f}" x2="{x + 18:.1f}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{color}" stroke-width="2"{da}/>')
            self.text(x + 22, yy + 3, label, size=9, anchor="start")

    def svg(self) -> str:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}" role="img">' + "".join(self.parts) + "</svg>")


def line_chart(series: Sequence[dict[str, Any]], *, title: str, xlabel: str = "", ylabel: str = "",
               ylim: tuple[float, float] | None = None, width: int = 420, height: int = 280,
               hlines: Sequence[dict[str, Any]] = (), legend: bool = True, legend_at: str = "top",
               xlim: tuple[float, float] | None = None, xticks: Sequence[float] | None = None) -> str:
    """Lines or steps: each series ``{"x", "y", "color", "dash", "step", "label"}``; ``hlines`` ``{"y", "color", "label"}``."""
    xs = [x for s in series for x in s["x"]]
    ys = [y for s in series for y in s["y"] if y is not None and math.isfinite(y)] + [h["y"] for h in hlines]
    n_items = sum(1 for s in series if s.get("label")) + sum(1 for h in hlines if h.get("label"))
    # "below": the legend goes under the x axis label, outside the plot, so it never hides a point.
    extra = 13 * n_items + 6 if legend and legend_at == "below" else 0
    c = Canvas(width, height + extra, bottom=40 + extra)
    if ylim is None:
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        pad = 0.05 * (hi - lo or 1.0)
        ylim = (lo - pad, hi + pad)
    if xlim is None:
        xlim = (min(xs), max(xs)) if xs else (0.0, 1.0)
    c.scale(xlim[0], xlim[1], ylim[0], ylim[1])
    c.axes(title, xlabel, ylabel, xticks=True if xticks is None else xticks)
    for s in series:
        c.polyline(s["x"], s["y"], s["color"], dash=s.get("dash", False), step=s.get("step", False))
    for h in hlines:
        y = c.Y(h["y"])
        c.parts.append(f'<line x1="{c.l}" x2="{c.l + c.pw:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{h["color"]}" stroke-width="1.3" stroke-dasharray="2,3"/>')
    if legend:
        items = [(s["label"], s["color"], s.get("dash", False)) for s in series if s.get("label")]
        items += [(h["label"], h["color"], True) for h in hlines if h.get("label")]
        if legend_at == "below":
            c.legend(items, x=c.l + 4, y=c.t + c.ph + 46, boxed=False)
        else:
            c.legend(items, y=None if legend_at == "top" else c.t + c.ph - 13 * len(items) - 2)
    return c.svg()


def bar_chart(categories: Sequence[str], groups: Sequence[dict[str, Any]], *, title: str, ylabel: str = "",
              width: int | None = None, height: int = 260, rotate: bool = False, scale: float = 1.0) -> str:
    """Grouped bars: ``groups`` ``[{"values", "color", "label"}]`` over ``categories``."""
    n = len(categories)
    width = width or max(320, 40 + 22 * n * max(len(groups), 1))
    bottom = 70 if rotate else 40
    c = Canvas(width, height, bottom=bottom)
    vals = [v * scale for g in groups for v in g["values"] if v is not None]
    c.scale(0, n, 0, max(vals + [1e-9]) * 1.08)
    c.axes(title, "", ylabel, xticks=False)
    slot = c.pw / max(n, 1)
    bw = slot * 0.8 / max(len(groups), 1)
    for gi, g in enumerate(groups):
        for i, v in enumerate(g["values"]):
            if v is None:
                continue
            x = c.l + i * slot + slot * 0.1 + gi * bw
            y = c.Y(v * scale)
            c.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{c.t + c.ph - y:.1f}" fill="{g["color"]}"/>')
    for i, cat in enumerate(categories):
        x = c.l + (i + 0.5) * slot
        if rotate:
            c.text(x + 3, c.t + c.ph + 8, cat, size=8, anchor="end", rotate=-60)
        else:
            c.text(x, c.t + c.ph + 13, cat, size=9)
    c.legend([(g["label"], g["color"], False) for g in groups if g.get("label")])
    return c.svg()


def _diverging(v: float, vmax: float) -> str:
    """Blue (negative) - white - red (positive)."""
    t = max(-1.0, min(1.0, v / vmax)) if vmax > 0 else 0.0
    if t >= 0:
        r, g, b = 255, int(255 * (1 - 0.75 * t)), int(255 * (1 - 0.8 * t))
    else:
        r, g, b = int(255 * (1 + 0.8 * t)), int(255 * (1 + 0.6 * t)), 255
    return f"rgb({r},{g},{b})"


def _sequential(v: float, vmax: float) -> str:
    """White (0) to dark purple (vmax)."""
    t = max(0.0, min(1.0, v / vmax)) if vmax > 0 else 0.0
    return f"rgb({int(255 - 180 * t)},{int(255 - 235 * t)},{int(255 - 120 * t)})"


def heatmap(matrix: Sequence[Sequence[float | None]], labels: Sequence[str], *, title: str, vmax: float,
            diverging: bool = True, cell: int = 14, note: str = "") -> str:
    """Square heatmap with row and column labels; None cells are grey."""
    n = len(labels)
    lab_w = 8 + 6 * max((len(s) for s in labels), default=1)
    c = Canvas(lab_w + n * cell + 20, 30 + lab_w + n * cell + 24, left=lab_w, top=30, bottom=lab_w, right=20)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v is None or not math.isfinite(v):
                fill = "#f0f0f0"
            else:
                fill = _diverging(v, vmax) if diverging else _sequential(v, vmax)
            title_attr = "" if v is None else f"<title>{escape(labels[i])} / {escape(labels[j])}: {v:.3f}</title>"
            c.parts.append(f'<rect x="{c.l + j * cell}" y="{c.t + i * cell}" width="{cell}" height="{cell}" fill="{fill}">{title_attr}</rect>')
    for i, s in enumerate(labels):
        c.text(c.l - 3, c.t + i * cell + cell * 0.7, s, size=8, anchor="end")
        x = c.l + i * cell + cell * 0.7
        c.text(x, c.t + n * cell + 4, s, size=8, anchor="end", rotate=-90)
    c.text(c.l + n * cell / 2, 16, title, size=11, weight="bold")
    if note:
        c.text(c.l + n * cell / 2, c.h - 6, note, size=9)
    return c.svg()
