"""Every chart of fedsynth's reports as a matplotlib figure, built from the JSON-able result, plus its SVG text.

The figure builders read only the report's aggregates (curves on a grid, binned distributions, frequencies,
scores by round): never a row. They return :class:`matplotlib.figure.Figure` objects made without pyplot (no
global figure manager, no display, no backend switch; an Agg canvas measures the text), so tests can read what
a chart shows (its lines, labels, ticks and legend) and :func:`figure_svg` alone turns a figure into the text a
page inlines. Computation (the ``evaluation`` modules), structure (these builders) and rendering
(:func:`figure_svg` and the templates) stay apart, as in SDMetrics' reports.

SVG output is small and reproducible: text stays text (``svg.fonttype = "none"``), element ids come from a fixed
salt (``svg.hashsalt``) and the file carries no date or creator metadata, so the same report gives the same bytes.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, MaxNLocator, PercentFormatter

from fedsynth.evaluation.chart_style import (
    CURVE_COLORS,
    CURVE_MARKERS,
    PALETTE,
    REAL_COLOR,
    REF_COLORS,
    REF_DASHES,
    SYN_COLOR,
    chart_style,
    figure_svg,
    new_figure,
    styled,
)

__all__ = [
    "CURVE_COLORS",
    "CURVE_MARKERS",
    "LOG_OR_CLIP",
    "PALETTE",
    "REAL_COLOR",
    "REF_COLORS",
    "REF_DASHES",
    "ROUND_SCORES",
    "SYN_COLOR",
    "TOP_GENES",
    "chart_style",
    "cooccurrence_figure",
    "distribution_figures",
    "figure_svg",
    "gene_frequency_figure",
    "km_figures",
    "mutations_per_patient_figure",
    "nndr_figure",
    "pair_loss_figure",
    "report_figures",
    "round_value",
    "rounds_figure",
    "rounds_figures",
]

#: Genes drawn in the mutation-frequency chart; the report's table lists every gene.
TOP_GENES = 30
#: Heatmap values are clipped to this absolute log odds ratio.
LOG_OR_CLIP = 3.0


def _finite(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _pval(p: Any) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-3 else "<0.001"


# -- survival -----------------------------------------------------------------------------------------------


@styled
def km_figures(name: str, endpoint: Mapping[str, Any]) -> list[Figure]:
    """Kaplan-Meier curves of one endpoint: overall, then one figure per stratum column.

    Parameters
    ----------
    name : str
        The endpoint's name (e.g. ``"OS"``).
    endpoint : mapping
        The endpoint's entry of ``survival_analysis``: ``grid``, ``time_unit``, ``overall`` (``real``,
        ``synthetic``, ``curve_similarity``) and ``strata`` (per column: ``groups`` with ``real`` and
        ``synthetic`` curves on the grid, ``logrank_p_real``, ``logrank_p_synthetic``).

    Returns
    -------
    list of Figure
        Real curves solid, synthetic dashed; a stratum's groups share a colour between real and synthetic.
    """
    grid = _finite(endpoint["grid"])
    unit = endpoint.get("time_unit", "")
    overall = endpoint["overall"]
    fig = new_figure(4.1, 3.1, f"{name} Kaplan-Meier overall")
    ax = fig.add_subplot()
    ax.step(grid, _finite(overall["real"]), where="post", color=REAL_COLOR, label="real")
    ax.step(grid, _finite(overall["synthetic"]), where="post", color=SYN_COLOR, linestyle="--", label="synthetic")
    _km_axes(ax, f"{name} overall (similarity {overall['curve_similarity']:.3f})", f"time ({unit})")
    ax.legend(loc="upper right")
    out = [fig]
    for col, stratum in endpoint.get("strata", {}).items():
        groups = stratum.get("groups") or {}
        if not groups:
            continue
        n_items = len(groups) + 2
        fig = new_figure(4.1, 3.1 + 0.16 * math.ceil(n_items / 3), f"{name} Kaplan-Meier by {col}")
        ax = fig.add_subplot()
        handles: list[Any] = []
        for j, (group, entry) in enumerate(groups.items()):
            color = PALETTE[j % len(PALETTE)]
            (line,) = ax.step(grid, _finite(entry["real"]), where="post", color=color, label=f"{col}={group}")
            handles.append(line)
            if entry.get("synthetic") is not None:
                ax.step(grid, _finite(entry["synthetic"]), where="post", color=color, linestyle="--")
        handles += [Line2D([], [], color="#555555", label="real"),
                    Line2D([], [], color="#555555", linestyle="--", label="synthetic")]
        _km_axes(ax, f"{name} by {col}", f"time ({unit}); log-rank p real {_pval(stratum.get('logrank_p_real'))}, "
                 f"synthetic {_pval(stratum.get('logrank_p_synthetic'))}")
        fig.legend(handles=handles, loc="outside lower center", ncols=3)
        out.append(fig)
    return out


@styled
def km_band_figure(name: str, curves: Mapping[str, Mapping[str, Any]], *, time_unit: str = "") -> Figure:
    """Kaplan-Meier curves with their 95% confidence bands, one per group (a control arm and its reference).

    Parameters
    ----------
    name : str
        The endpoint's name (e.g. ``"OS"``), in the title.
    curves : mapping
        Per group label: ``times``, ``survival``, ``lower`` and ``upper`` (step curves, same length), as
        :func:`fedsynth.evaluation.arm.km_curve` gives them. The first group is drawn in the synthetic colour,
        the second in the real one.

    Returns
    -------
    Figure
        Step curves with shaded bands.
    """
    fig = new_figure(4.6, 3.3, f"{name} Kaplan-Meier with 95% bands")
    ax = fig.add_subplot()
    for j, (label, c) in enumerate(curves.items()):
        color = (SYN_COLOR, REAL_COLOR, *PALETTE)[j]
        t = _finite(c["times"])
        ax.step(t, _finite(c["survival"]), where="post", color=color, label=label)
        ax.fill_between(t, _finite(c["lower"]), _finite(c["upper"]), step="post", color=color, alpha=0.18, linewidth=0)
    _km_axes(ax, f"{name}", f"time ({time_unit})" if time_unit else "time")
    ax.legend(loc="upper right")
    return fig


def _km_axes(ax: Axes, title: str, xlabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("survival")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(left=0.0)


# -- genomics ------------------------------------------------------------------------------------------------


@styled
def gene_frequency_figure(genomics: Mapping[str, Any], *, top: int = TOP_GENES) -> Figure:
    """Mutation frequency per gene, real and synthetic, as horizontal bars (most frequent on top).

    Horizontal bars keep every gene's name level and readable however many genes there are, and bar length is
    the most precise encoding for comparing two frequencies side by side (a heatmap would encode them by colour).
    With more than ``top`` genes only the ``top`` genes with the highest real or synthetic frequency are drawn,
    so a gene the generator over-produces is shown too; the report's table lists every gene.

    Parameters
    ----------
    genomics : mapping
        ``genomics_analysis`` output: ``genes`` and ``frequency`` (``real`` and ``synthetic``: gene -> share).
    top : int
        Most genes drawn.
    """
    real, syn = genomics["frequency"]["real"], genomics["frequency"]["synthetic"]
    genes = list(genomics["genes"])
    shown = sorted(genes, key=lambda g: (-max(real.get(g) or 0.0, syn.get(g) or 0.0), genes.index(g)))[:top]
    shown.sort(key=lambda g: (-(real.get(g) or 0.0), genes.index(g)))
    n = len(shown)
    title = "Mutation frequency per gene" if n == len(genes) else f"Mutation frequency, top {n} of {len(genes)} genes"
    fig = new_figure(5.2, 1.1 + 0.2 * n, title)
    ax = fig.add_subplot()
    y = np.arange(n)
    h = 0.4
    ax.barh(y - h / 2, [100 * (real.get(g) or 0.0) for g in shown], height=h, color=REAL_COLOR, label="real")
    ax.barh(y + h / 2, [100 * (syn.get(g) or 0.0) for g in shown], height=h, color=SYN_COLOR, label="synthetic")
    ax.set_yticks(y, shown)
    ax.set_ylim(n - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set_xlabel("patients mutated")
    ax.set_title(title)
    ax.legend(loc="lower right")
    return fig


@styled
def mutations_per_patient_figure(genomics: Mapping[str, Any]) -> Figure:
    """Share of patients by number of mutated genes, real and synthetic (grouped bars)."""
    m = genomics["mutations_per_patient"]
    title = f"Mutated genes per patient (1 - KS = {m['similarity']:.3f})"
    fig = new_figure(4.4, 3.0, title)
    ax = fig.add_subplot()
    _grouped_bars(ax, list(m["bins"]), [("real", m["real"], REAL_COLOR), ("synthetic", m["synthetic"], SYN_COLOR)],
                  rotate=False)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_ylabel("patients")
    ax.set_xlabel("mutated genes")
    ax.set_title(title)
    ax.legend(loc="upper right")
    return fig


@styled
def cooccurrence_figure(genomics: Mapping[str, Any]) -> Figure | None:
    """Log odds ratio of every gene pair, real beside synthetic, on one colour scale clipped at +/-3.

    Red co-occurring, blue mutually exclusive, grey untested. With more than 30 genes the two maps are stacked
    so each stays legible. None when no gene pair was tested.
    """
    hm = genomics["heatmap"]
    genes = list(hm["genes"])
    n = len(genes)
    if n == 0:
        return None
    side = max(2.6, 0.13 * n + 0.9)
    stacked = n > 30
    fig = new_figure(side + 0.8 if stacked else 2 * side + 0.8, 2 * side + 0.3 if stacked else side + 0.3,
                  "Gene-pair log odds ratios, real and synthetic")
    axes = fig.subplots(2, 1) if stacked else fig.subplots(1, 2)
    cmap = mpl.colormaps["RdBu_r"].with_extremes(bad="#eeeeee")
    image: Any = None
    for ax, key in zip(np.ravel(axes), ("real", "synthetic")):
        matrix = np.array([_finite(row) for row in hm[key]], dtype=float).reshape(n, n)
        image = ax.imshow(np.clip(matrix, -LOG_OR_CLIP, LOG_OR_CLIP), cmap=cmap, vmin=-LOG_OR_CLIP, vmax=LOG_OR_CLIP,
                          interpolation="nearest", aspect="equal")
        _matrix_labels(ax, genes, size=6.5 if n <= 40 else 5.5)
        ax.set_title(f"log odds ratio, {key}")
    bar = fig.colorbar(image, ax=list(np.ravel(axes)), shrink=0.6, aspect=25)
    bar.set_label(f"red co-occurring, blue exclusive (clipped at ±{LOG_OR_CLIP:g})")
    return fig


# -- fidelity -------------------------------------------------------------------------------------------------


@styled
def pair_loss_figure(fidelity: Mapping[str, Any], columns: Sequence[str]) -> Figure:
    """Heatmap of 1 - pair similarity for every pair of ``columns`` (white 0; grey: not computed)."""
    idx = {c: i for i, c in enumerate(columns)}
    n = len(columns)
    matrix = np.full((n, n), np.nan)
    for a, b, _, sim in fidelity["pairs"]["pairs"]:
        if a in idx and b in idx and sim is not None:
            matrix[idx[a], idx[b]] = matrix[idx[b], idx[a]] = 1.0 - float(sim)
    worst = float(np.nanmax(matrix)) if np.isfinite(matrix).any() else 0.0
    vmax = max(0.1, worst)
    side = max(3.0, 0.12 * n + 1.2)
    fig = new_figure(side + 1.0, side, "Pair-fidelity loss")
    ax = fig.add_subplot()
    cmap = mpl.colormaps["Purples"].with_extremes(bad="#eeeeee")
    image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest", aspect="equal")
    _matrix_labels(ax, list(columns), size=6.5 if n <= 50 else 5.5)
    ax.set_title("Pair-fidelity loss (1 - pair similarity)")
    fig.colorbar(image, ax=ax, shrink=0.6, aspect=25, label="1 - pair similarity")
    return fig


def _matrix_labels(ax: Axes, labels: Sequence[str], *, size: float) -> None:
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=90, fontsize=size)
    ax.set_yticks(ticks, labels, fontsize=size)
    ax.tick_params(length=0)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


@styled
def distribution_figures(fidelity: Mapping[str, Any], columns: Sequence[str]) -> list[Figure]:
    """One small chart per column: a histogram as steps (numeric) or grouped bars (categories), real and synthetic.

    Columns without a stored distribution are skipped. Titles carry the column's similarity (1-KS or 1-TVD).
    """
    out = []
    for c in columns:
        d = fidelity.get("distributions", {}).get(c)
        if d is None:
            continue
        sim = fidelity["columns"][c]["similarity"]
        if d["type"] == "histogram":
            title = f"{c}: 1-KS {sim:.3f}"
            fig = new_figure(3.1, 2.5, title)
            ax = fig.add_subplot()
            edges = _finite(d["edges"])
            ax.stairs(_finite(d["real"]), edges, color=REAL_COLOR, label="real")
            ax.stairs(_finite(d["synthetic"]), edges, color=SYN_COLOR, linestyle="--", label="synthetic")
            ax.set_xlabel(f"missing {100 * d['missing_real']:.0f}% real, {100 * d['missing_synthetic']:.0f}% synthetic")
        else:
            title = f"{c}: 1-TVD {sim:.3f}"
            fig = new_figure(3.1, 2.5, title)
            ax = fig.add_subplot()
            groups = [("real", d["real"], REAL_COLOR), ("synthetic", d["synthetic"], SYN_COLOR)]
            _grouped_bars(ax, list(d["labels"]), groups,
                          rotate=sum(len(str(x)) + 2 for x in d["labels"]) > 30)
        ax.set_ylabel("share")
        ax.set_title(title)
        out.append(fig)
    return out


def _grouped_bars(ax: Axes, categories: Sequence[Any], groups: Sequence[tuple[str, Sequence[Any], str]],
                  *, rotate: bool) -> None:
    x = np.arange(len(categories))
    width = 0.8 / max(len(groups), 1)
    for i, (label, values, color) in enumerate(groups):
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(_finite(values)), width=width, color=color, label=label)
    if rotate:
        ax.set_xticks(x, [str(c) for c in categories], rotation=60, ha="right", rotation_mode="anchor", fontsize=6.5)
    else:
        ax.set_xticks(x, [str(c) for c in categories])
    ax.grid(axis="x", visible=False)


# -- privacy --------------------------------------------------------------------------------------------------


@styled
def nndr_figure(privacy: Mapping[str, Any]) -> Figure | None:
    """Distribution of NNDR: synthetic rows against training rows beside holdout rows against training rows.

    The holdout line is the baseline a new real patient would have; vertical lines mark the 5th percentiles the
    privacy flag compares. None when the report has no NNDR histogram.
    """
    nndr = privacy.get("nndr", {})
    h = nndr.get("histogram")
    if not h:
        return None
    title = "NNDR (lower = closer to one training row)"
    fig = new_figure(4.8, 3.5, title)
    ax = fig.add_subplot()
    edges = _finite(h["edges"])
    ax.stairs(_finite(h["synthetic"]), edges, color=SYN_COLOR, label="synthetic -> training")
    p5_syn = (nndr.get("synthetic") or {}).get("p5")
    if p5_syn is not None:
        ax.axvline(p5_syn, color=SYN_COLOR, linestyle=":", linewidth=1.2,
                   label=f"synthetic 5th percentile {p5_syn:.3f}")
    if h.get("holdout") is not None:
        ax.stairs(_finite(h["holdout"]), edges, color=REAL_COLOR, linestyle="--", label="holdout -> training")
        p5_hold = (nndr.get("holdout") or {}).get("p5")
        if p5_hold is not None:
            ax.axvline(p5_hold, color=REAL_COLOR, linestyle="-.", linewidth=1.2,
                       label=f"holdout 5th percentile {p5_hold:.3f}")
    ax.set_xlim(float(edges[0]), float(edges[-1]))
    ax.set_xlabel("nearest / second-nearest Gower distance")
    ax.set_ylabel("share of rows")
    ax.set_title(title)
    fig.legend(loc="outside lower center", ncols=2)
    return fig


# -- scores by round ------------------------------------------------------------------------------------------


@styled
def rounds_figure(
    curves: Mapping[str, Sequence[tuple[int, float | None]]],
    references: Mapping[str, float | None],
    *,
    title: str,
    ylabel: str = "",
    width: float = 3.9,
) -> Figure:
    """One score by round: a curve per federated cohort and a horizontal line per reference model.

    Parameters
    ----------
    curves : mapping of str to sequence of (round, value)
        Each curve's points; a None value is left out.
    references : mapping of str to float or None
        Reference lines by label (e.g. ``"centralized"``, ``"site-1 alone"``); None or NaN values are left out.
    title, ylabel : str
    width : float
        Figure width in inches (the height grows with the legend).

    Returns
    -------
    Figure
        Curves solid with a marker at every round (a single round still shows as a point); reference lines
        differ from each other by colour and dash pattern. The x axis ticks whole rounds only, with half a round
        of margin; the y axis starts at the 0.1 step below the lowest value and ends just above 1. The legend
        sits under the plot, where it hides no point.
    """
    refs = {k: float(v) for k, v in references.items() if v is not None and math.isfinite(float(v))}
    points = {label: [(int(r), float(v)) for r, v in pts if v is not None and math.isfinite(float(v))]
              for label, pts in curves.items()}
    points = {label: pts for label, pts in points.items() if pts}  # a curve without a value has nothing to show
    rounds = [r for pts in curves.values() for r, _ in pts]
    lo, hi = (int(min(rounds)), int(max(rounds))) if rounds else (1, 1)
    step = max(1, math.ceil((hi - lo + 1) / 10))
    n_items = len(points) + len(refs)
    ncols = 2 if n_items > 3 and max((len(k) for k in [*points, *refs]), default=0) <= 28 else 1
    fig = new_figure(width, 2.9 + 0.17 * math.ceil(n_items / ncols), title)
    ax = fig.add_subplot()
    for i, (label, pts) in enumerate(points.items()):
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, color=CURVE_COLORS[i % len(CURVE_COLORS)], marker=CURVE_MARKERS[i % len(CURVE_MARKERS)],
                markersize=5, label=label)
    for j, (label, value) in enumerate(refs.items()):
        ax.axhline(value, color=REF_COLORS[j % len(REF_COLORS)], linestyle=REF_DASHES[j % len(REF_DASHES)],
                   linewidth=1.3, label=label)
    seen = [y for pts in points.values() for _, y in pts] + list(refs.values())
    y0 = max(0.0, math.floor((min(seen) - 0.02) * 10) / 10) if seen else 0.0
    ax.set_ylim(y0, max(1.02, *(v + 0.02 for v in seen)) if seen else 1.02)
    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.xaxis.set_major_locator(FixedLocator(list(range(lo, hi + 1, step))))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10]))
    ax.grid(axis="x", visible=False)
    ax.set_xlabel("round")
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    if n_items:
        fig.legend(loc="outside lower center", ncols=ncols)
    return fig


#: The per-round scores charted by :func:`rounds_figures`, with their titles.
ROUND_SCORES = (("csf", "CSF"), ("gsf", "GSF"), ("nndr_p5", "NNDR 5th percentile"))


def round_value(entry: Mapping[str, Any], key: str) -> float | None:
    """A score of one round or reference: ``entry[key]``; ``nndr_p5`` may also sit in ``nndr.synthetic.p5``."""
    value = entry.get(key)
    if key == "nndr_p5" and value is None:
        nndr = entry.get("nndr")
        synthetic = nndr.get("synthetic") if isinstance(nndr, Mapping) else None
        value = synthetic.get("p5") if isinstance(synthetic, Mapping) else None
    return None if value is None else float(value)


def rounds_figures(rounds: Sequence[Mapping[str, Any]], references: Mapping[str, Mapping[str, Any]]) -> list[Figure]:
    """CSF, GSF and NNDR 5th percentile by round of one run, with a line per reference model.

    Parameters
    ----------
    rounds : sequence of mapping
        One entry per round: ``round`` (int; default its position from 1) and ``csf``, ``gsf``, ``nndr_p5``.
    references : mapping of str to mapping
        Reference models by label (e.g. ``"centralized"``, ``"site-1 alone"``), each with any of the scores.
    """
    out = []
    for key, label in ROUND_SCORES:
        points = [(int(r.get("round", i + 1)), round_value(r, key)) for i, r in enumerate(rounds)]
        refs = {name: round_value(entry, key) for name, entry in references.items()}
        out.append(rounds_figure({"federated rounds": points}, refs, title=f"{label} by round"))
    return out


# -- a whole report -----------------------------------------------------------------------------------------


def report_figures(report: Mapping[str, Any]) -> dict[str, Any]:
    """Every figure of a full evaluation report (the dict of ``EvaluationReport.to_dict()``).

    Returns
    -------
    dict
        ``km`` (endpoint name -> list of Figure), ``freq``, ``mpp``, ``cooc`` (Figure or None), ``pairs``
        (Figure), ``dists`` (list of Figure, non-genomic columns) and ``nndr`` (Figure or None).
    """
    cols = report["info"]["columns"]
    figures: dict[str, Any] = {"km": {}}
    for name in report["survival"].get("endpoint_names", []):
        endpoint = report["survival"][name]
        if endpoint.get("available"):
            figures["km"][name] = km_figures(name, endpoint)
    gen = report["genomics"]
    available = bool(gen.get("available"))
    figures["freq"] = gene_frequency_figure(gen) if available else None
    figures["mpp"] = mutations_per_patient_figure(gen) if available else None
    figures["cooc"] = cooccurrence_figure(gen) if available else None
    figures["pairs"] = pair_loss_figure(report["fidelity"], cols["data"])
    genomic = set(cols["genomic"])
    figures["dists"] = distribution_figures(report["fidelity"], [c for c in cols["data"] if c not in genomic])
    figures["nndr"] = nndr_figure(report["privacy"])
    return figures
