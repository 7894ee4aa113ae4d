"""The look of fedsynth's charts and their SVG text: colours, the report's matplotlib style, a figure factory
without pyplot, and :func:`figure_svg` (deterministic inline SVG). The figures themselves are built in
:mod:`fedsynth.evaluation.charts`, which re-exports these names.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html import escape
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import matplotlib as mpl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

REAL_COLOR = "#1f4e79"
SYN_COLOR = "#d9822b"
#: Group colours (matplotlib's tab10 without the orange and dark blue that mean "synthetic" and "real").
PALETTE = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
#: Reference lines: colour and dash pattern both differ from line to line (and from the solid score curves).
REF_COLORS = ("#000000", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
REF_DASHES: tuple[Any, ...] = ("--", ":", "-.", (0, (6, 2, 1, 2, 1, 2)), (0, (1, 1)), (0, (8, 3)))
#: Score curves by round: colour and marker differ from curve to curve.
CURVE_COLORS = (SYN_COLOR, "#1f77b4", "#d62728", "#bcbd22", "#17becf", "#8c564b")
CURVE_MARKERS = ("o", "s", "^", "D", "v", "P")

_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "fedsynth",
    "svg.image_inline": True,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # the metrics of the layout; a browser without it takes its sans-serif
    "font.size": 8.0,
    "axes.titlesize": 9.0,
    "axes.titleweight": "bold",
    "axes.labelsize": 8.0,
    "axes.edgecolor": "#999999",
    "axes.linewidth": 0.7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "legend.fontsize": 7.5,
    "legend.frameon": True,
    "legend.framealpha": 0.85,
    "legend.edgecolor": "#dddddd",
    "lines.linewidth": 1.4,
    "figure.dpi": 72.0,
    "savefig.dpi": 72.0,
}

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def chart_style() -> Iterator[None]:
    """The report style (fonts, grid, SVG settings) for the figures built or saved inside the block."""
    with mpl.rc_context(_RC):
        yield


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run inside :func:`chart_style` (a decorator for figure builders)."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with chart_style():
            return fn(*args, **kwargs)

    return wrapper


def new_figure(width: float, height: float, title: str) -> Figure:
    """A figure of ``width`` x ``height`` inches laid out by matplotlib's constrained layout."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas measures text for the layout; nothing is ever shown
    fig.set_label(title)
    return fig


def figure_svg(fig: Figure) -> str:
    """The figure as one ``<svg>`` element to inline in an HTML page (no XML prolog, no metadata).

    Deterministic: the same figure gives the same text (fixed id salt, no date). The element carries
    ``role="img"`` and the figure's label as ``aria-label``. The figure is laid out here, once, and keeps that
    layout (its layout engine is removed).
    """
    buf = io.StringIO()
    with chart_style():
        engine = fig.get_layout_engine()
        if engine is not None:
            # savefig would draw the whole figure once without output just to run the layout, then again for the
            # SVG; laying out first and dropping the engine saves that pass (~40% of the time of a report's charts)
            engine.execute(fig)
            fig.set_layout_engine(None)
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.DOTALL)
    # Smaller text, same picture: no indentation, no ids on groups (nothing refers to them, and they would repeat
    # across the figures of one page), path coordinates to 0.01 pt.
    text = re.sub(r"\n\s+", "\n", text)
    text = re.sub(r'<g id="[^"]*">', "<g>", text)
    text = re.sub(r' d="[^"]*"', _round_path, text)
    text = re.sub(r' ([xy])="(-?\d+\.\d+)"', lambda m: f' {m.group(1)}="{_short(m.group(2))}"', text)
    label = str(fig.get_label() or "")
    if label:
        text = text.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1)
    return text.strip()


_NUMBER = re.compile(r"-?\d+\.\d+")


def _short(number: str) -> str:
    return f"{float(number):.2f}".rstrip("0").rstrip(".")


def _round_path(match: re.Match[str]) -> str:
    return _NUMBER.sub(lambda m: _short(m.group()), match.group())
