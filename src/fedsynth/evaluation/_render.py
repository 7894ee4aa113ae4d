"""HTML rendering of reports: inline SVG charts (see :mod:`._svg`) and jinja2 templates shipped in the package.

Everything drawn comes from the JSON-able report (aggregates, curves, binned distributions), never from rows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedsynth.evaluation import _svg
from fedsynth.evaluation._svg import PALETTE
from fedsynth.evaluation._svg import REAL as REAL_COLOR
from fedsynth.evaluation._svg import SYN as SYN_COLOR

TEMPLATES = Path(__file__).parent / "templates"


def _p(p: Any) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-3 else "<0.001"


def _none(v: Any) -> float:
    return float("nan") if v is None else float(v)


# -- figures (each returns SVG markup) --------------------------------------------------------------------


def km_figures(name: str, ep: dict[str, Any]) -> list[str]:
    grid = ep["grid"]
    unit = ep.get("time_unit", "")
    out = [_svg.line_chart(
        [{"x": grid, "y": ep["overall"]["real"], "color": REAL_COLOR, "step": True, "label": "real"},
         {"x": grid, "y": ep["overall"]["synthetic"], "color": SYN_COLOR, "step": True, "dash": True, "label": "synthetic"}],
        title=f"{name} overall (similarity {ep['overall']['curve_similarity']:.3f})", xlabel=f"time ({unit})",
        ylabel="survival", ylim=(0, 1.02))]
    for col, st in ep.get("strata", {}).items():
        if not st.get("groups"):
            continue
        series = []
        for j, (g, ge) in enumerate(st["groups"].items()):
            color = PALETTE[j % len(PALETTE)]
            series.append({"x": grid, "y": ge["real"], "color": color, "step": True, "label": f"{col}={g}"})
            if ge.get("synthetic") is not None:
                series.append({"x": grid, "y": ge["synthetic"], "color": color, "step": True, "dash": True})
        out.append(_svg.line_chart(
            series, title=f"{name} by {col}: solid real, dashed synthetic", xlabel=f"time ({unit}); log-rank p real "
            f"{_p(st.get('logrank_p_real'))}, synthetic {_p(st.get('logrank_p_synthetic'))}", ylabel="survival",
            ylim=(0, 1.02)))
    return out


def freq_figure(gen: dict[str, Any]) -> str:
    genes = sorted(gen["genes"], key=lambda g: -gen["frequency"]["real"][g])
    return _svg.bar_chart(
        genes,
        [{"values": [gen["frequency"]["real"][g] for g in genes], "color": REAL_COLOR, "label": "real"},
         {"values": [gen["frequency"]["synthetic"][g] for g in genes], "color": SYN_COLOR, "label": "synthetic"}],
        title="Mutation frequency per gene", ylabel="% of patients mutated", rotate=True, scale=100.0, height=300)


def mpp_figure(gen: dict[str, Any]) -> str:
    m = gen["mutations_per_patient"]
    return _svg.bar_chart(
        m["bins"],
        [{"values": m["real"], "color": REAL_COLOR, "label": "real"},
         {"values": m["synthetic"], "color": SYN_COLOR, "label": "synthetic"}],
        title=f"Mutated genes per patient (1 - KS = {m['similarity']:.3f})", ylabel="% of patients", scale=100.0,
        width=420, height=300)


def cooccurrence_figures(gen: dict[str, Any]) -> list[str]:
    hm = gen["heatmap"]
    return [
        _svg.heatmap(hm[key], hm["genes"], title=f"log odds ratio, {key}", vmax=3.0,
                     note="red co-occurring, blue exclusive (clipped at +/-3)")
        for key in ("real", "synthetic")
    ]


def pair_loss_figure(fid: dict[str, Any], columns: list[str]) -> str:
    idx = {c: i for i, c in enumerate(columns)}
    m: list[list[float | None]] = [[None] * len(columns) for _ in columns]
    worst = 0.0
    for a, b, _, sim in fid["pairs"]["pairs"]:
        if a in idx and b in idx and sim is not None:
            m[idx[a]][idx[b]] = m[idx[b]][idx[a]] = 1.0 - sim
            worst = max(worst, 1.0 - sim)
    return _svg.heatmap(m, columns, title="Pair-fidelity loss (1 - pair similarity)", vmax=max(0.1, worst),
                        diverging=False, cell=13, note=f"white 0, dark {max(0.1, worst):.2f}")


def distribution_figures(fid: dict[str, Any], columns: list[str]) -> list[str]:
    out = []
    for c in columns:
        d = fid.get("distributions", {}).get(c)
        if d is None:
            continue
        sim = fid["columns"][c]["similarity"]
        if d["type"] == "histogram":
            edges = d["edges"]
            out.append(_svg.line_chart(
                [{"x": edges, "y": d["real"] + d["real"][-1:], "color": REAL_COLOR, "step": True, "label": "real"},
                 {"x": edges, "y": d["synthetic"] + d["synthetic"][-1:], "color": SYN_COLOR, "step": True, "dash": True,
                  "label": "synthetic"}],
                title=f"{c}: 1-KS {sim:.3f}", xlabel=f"missing {100 * d['missing_real']:.0f}% real, "
                f"{100 * d['missing_synthetic']:.0f}% synthetic", ylabel="share", width=300, height=200, legend=False))
        else:
            out.append(_svg.bar_chart(
                d["labels"], [{"values": d["real"], "color": REAL_COLOR}, {"values": d["synthetic"], "color": SYN_COLOR}],
                title=f"{c}: 1-TVD {sim:.3f}", ylabel="share", rotate=True, width=300, height=200))
    return out


def nndr_figure(priv: dict[str, Any]) -> str | None:
    h = priv.get("nndr", {}).get("histogram")
    if not h:
        return None
    edges = h["edges"]
    series = [{"x": edges, "y": h["synthetic"] + h["synthetic"][-1:], "color": SYN_COLOR, "step": True,
               "label": "synthetic -> training"}]
    if h.get("holdout") is not None:
        series.append({"x": edges, "y": h["holdout"] + h["holdout"][-1:], "color": REAL_COLOR, "step": True, "dash": True,
                       "label": "holdout -> training"})
    return _svg.line_chart(series, title="NNDR (lower = closer to one training row)",
                           xlabel="nearest / second-nearest Gower distance", ylabel="share of rows", width=460)


def rounds_figures(rounds: list[dict[str, Any]], references: dict[str, dict[str, Any]]) -> list[str]:
    xs = [r.get("round", i + 1) for i, r in enumerate(rounds)]
    # Rounds are whole numbers: ticks on rounds only (at most ~10), half a round of margin on either side.
    lo, hi = (int(min(xs)), int(max(xs))) if xs else (1, 1)
    step = max(1, math.ceil((hi - lo + 1) / 10))
    xticks = list(range(lo, hi + 1, step))
    out = []
    for key, label in (("csf", "CSF"), ("gsf", "GSF"), ("nndr_p5", "NNDR 5th percentile")):
        ys = [_round_value(r, key) for r in rounds]
        hl: list[dict[str, Any]] = [
            {"y": v, "color": PALETTE[(j + 2) % len(PALETTE)], "label": ref}
            for j, (ref, vals) in enumerate(references.items()) if (v := _round_value(vals, key)) is not None
        ]
        # The y axis starts at the 0.1 step below the lowest value (scores differ in the second decimal).
        seen = [y for y in [*ys, *(h["y"] for h in hl)] if y is not None and math.isfinite(y)]
        y0 = max(0.0, math.floor((min(seen) - 0.02) * 10) / 10) if seen else 0.0
        out.append(_svg.line_chart(
            [{"x": xs, "y": [_none(y) for y in ys], "color": SYN_COLOR, "label": "federated rounds"}],
            title=f"{label} by round", xlabel="round", ylim=(y0, 1.02), hlines=hl, width=400, legend_at="below",
            xlim=(lo - 0.5, hi + 0.5), xticks=xticks))
    return out


def _round_value(r: dict[str, Any], key: str) -> float | None:
    if key == "nndr_p5" and r.get("nndr_p5") is None:
        try:
            return r["nndr"]["synthetic"]["p5"]
        except (KeyError, TypeError):
            return None
    v = r.get(key)
    return None if v is None else float(v)


# -- pages ------------------------------------------------------------------------------------------


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )

    def fmt(v: Any, nd: int = 3) -> str:
        if v is None:
            return "—"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            if not math.isfinite(v):
                return "—"
            return f"{v:.{nd}f}"
        return str(v)

    def pct(v: Any, nd: int = 1) -> str:
        return "—" if v is None else f"{100 * float(v):.{nd}f}%"

    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    env.filters["pval"] = _p
    env.filters["hr"] = lambda v: "—" if v is None or not math.isfinite(float(v)) else f"{math.exp(float(v)):.2f}"
    return env


def report_plots(report: dict[str, Any]) -> dict[str, Any]:
    cols = report["info"]["columns"]
    plots: dict[str, Any] = {"km": {}}
    for name in report["survival"].get("endpoint_names", []):
        ep = report["survival"][name]
        if ep.get("available"):
            plots["km"][name] = km_figures(name, ep)
    gen = report["genomics"]
    plots["freq"] = plots["mpp"] = None
    plots["cooc"] = []
    if gen.get("available"):
        plots["freq"] = freq_figure(gen)
        plots["mpp"] = mpp_figure(gen)
        plots["cooc"] = cooccurrence_figures(gen) if gen["heatmap"]["genes"] else []
    plots["pairs"] = pair_loss_figure(report["fidelity"], cols["data"])
    non_gene = [c for c in cols["data"] if c not in set(cols["genomic"])]
    plots["dists"] = distribution_figures(report["fidelity"], non_gene)
    plots["nndr"] = nndr_figure(report["privacy"])
    return plots


def report_html(report: dict[str, Any], *, title: str) -> str:
    env = _env()
    return env.get_template("report.html.j2").render(r=report, plots=report_plots(report), title=title)


def rounds_html(
    rounds: list[dict[str, Any]], references: dict[str, dict[str, Any]], final: dict[str, Any] | None, *, title: str
) -> str:
    env = _env()
    return env.get_template("rounds.html.j2").render(
        rounds=rounds, references=references, title=title, rounds_plots=rounds_figures(rounds, references),
        r=final, plots=report_plots(final) if final is not None else None,
        value=_round_value,
    )
