"""Standalone HTML for a grid summary: headline table, round curves with reference lines, survival consistency."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#1f2933;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #d9e2ec;padding-bottom:.3rem}
table{border-collapse:collapse;width:100%;font-size:.85rem;margin:.8rem 0}
th,td{border:1px solid #d9e2ec;padding:.3rem .45rem;text-align:right}th{background:#f0f4f8}
td.l,th.l{text-align:left}.bad{color:#b42318;font-weight:600}.good{color:#067647}
.muted{color:#627d98;font-size:.85rem}dl{font-size:.85rem}dt{font-weight:600}
.figs{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start;margin:8px 0}.figs svg{max-width:100%;height:auto}
"""

_COLUMNS = [
    ("csf", "CSF"), ("gsf", "GSF"), ("nndr_p5", "NNDR p5"), ("nndr_p5_holdout", "NNDR p5 holdout"),
    ("dcr_share", "DCR share"), ("mia_auc", "MIA AUC"), ("tstr_cindex", "TSTR C"), ("trtr_cindex", "TRTR C"),
    ("survival_agreement", "clin.-surv. direction"), ("gene_survival_agreement", "gene-surv. direction"),
]


def _fmt(cell: Mapping[str, Any] | None) -> str:
    if not cell or cell.get("mean") is None:
        return "–"
    if cell.get("n", 0) > 1:
        return f"{cell['mean']:.3f} ± {cell['sd']:.3f}"
    return f"{cell['mean']:.3f}"


def _p(v: Any) -> str:
    return "–" if v is None else (f"{v:.1e}" if v < 1e-3 else f"{v:.3f}")


def _curves_svg(generator: str, curves: list[Mapping[str, Any]], refs: Mapping[str, Any]) -> list[str]:
    """CSF and GSF by round of one generator's federated runs, with its reference lines, as inline SVG."""
    from fedsynth.evaluation import charts

    out = []
    for key, title in (("csf", "CSF by round"), ("gsf", "GSF by round")):
        points = {c["label"]: [(r.get("round", i + 1), r.get(key)) for i, r in enumerate(c["rounds"])] for c in curves}
        # centralized first: the upper bound every other line is read against
        lines = {label: refs[label].get(key) for label in sorted(refs, key=lambda k: (k != "centralized", k))}
        out.append(charts.figure_svg(charts.rounds_figure(points, lines, title=f"{generator}: {title}", width=5.0)))
    return out


def render_summary_html(summary: Mapping[str, Any]) -> str:
    """The grid's summary as one standalone HTML page (inline CSS, plots as inline SVG; no script, no network)."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>fedsynth grid {e(str(summary['grid']))}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Grid: {e(str(summary['grid']))}</h1>",
             (f"<p class='muted'>{summary['n_runs']} runs, {summary['n_failed']} failed. Mean ± SD over seeds. "
              "Privacy: NNDR p5 shown in red when below its holdout baseline.</p>")]
    if summary.get("failed"):
        parts.append("<p class='bad'>Failed runs: " + ", ".join(e(f"{f['slug']} ({f['error']})") for f in summary["failed"]) + "</p>")
    parts.append("<h2>Headline</h2><table><tr><th class='l'>generator</th><th class='l'>strategy</th>"
                 "<th class='l'>sites</th><th class='l'>scenario</th>"
                 + "".join(f"<th>{e(t)}</th>" for _, t in _COLUMNS) + "</tr>")
    for row in summary["table"]:
        cells = []
        for key, _ in _COLUMNS:
            cls = " class='bad'" if key == "nndr_p5" and row.get("nndr_ok") is False else ""
            cells.append(f"<td{cls}>{_fmt(row.get(key))}</td>")
        parts.append(
            f"<tr><td class='l'>{e(row['generator'])}</td><td class='l'>{e(row['strategy'])}</td>"
            f"<td class='l'>{e(row['layout'])}</td><td class='l'>{e(row['scenario'])}</td>{''.join(cells)}</tr>"
        )
    parts.append("</table><p class='muted'>A <em>local</em> row is the full evaluation of the last site's "
                 "cohort; every site alone is in the next table.</p>")
    if summary.get("site_alone"):
        parts.append("<h2>Federated against each site alone</h2><p class='muted'>Last round of each federated "
                     "strategy and of each site trained alone (per-round fast scores against the whole training "
                     "pool), mean ± SD over seeds.</p><table><tr><th class='l'>generator</th><th class='l'>sites</th>"
                     "<th class='l'>scenario</th><th class='l'>cohort</th><th>CSF</th><th>GSF</th></tr>")
        for row in summary["site_alone"]:
            parts.append(
                f"<tr><td class='l'>{e(row['generator'])}</td><td class='l'>{e(row['layout'])}</td>"
                f"<td class='l'>{e(row['scenario'])}</td><td class='l'>{e(row['cohort'])}</td>"
                f"<td>{_fmt(row['csf'])}</td><td>{_fmt(row['gsf'])}</td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Scores by round</h2>")
    for gen, curves in sorted(summary.get("curves", {}).items()):
        svgs = _curves_svg(gen, curves, summary.get("references", {}).get(gen, {}))
        parts.append("<div class='figs'>" + "".join(svgs) + "</div>")
    if not summary.get("curves"):
        parts.append("<p class='muted'>No federated run finished.</p>")
    parts.append("<h2>Survival p-value consistency (first endpoint, TP53)</h2>"
                 "<p class='muted'>Log-rank p of the stratum inside the real training data, inside the final "
                 "synthetic cohort (same size as the real data, from the full evaluation), and inside each "
                 "cohort's last snapshot — for a local run, each site-alone cohort. A faithful cohort separates "
                 "the same strata.</p>"
                 "<table><tr><th class='l'>run</th><th class='l'>stratum</th><th>p real</th>"
                 "<th>p synthetic (final)</th><th class='l'>p in each snapshot (cohort, rows)</th></tr>")
    for c in summary.get("survival_consistency", []):
        snaps = "; ".join(f"{s['cohort']}: {_p(s.get('p'))} (n={s['n']})" for s in c.get("snapshots", []))
        parts.append(f"<tr><td class='l'>{e(c['slug'])}</td><td class='l'>{e(str(c.get('stratum', '–')))}</td>"
                     f"<td>{_p(c.get('real_p'))}</td><td>{_p(c.get('synthetic_p'))}</td><td class='l'>{e(snaps) or '–'}</td></tr>")
    parts.append("</table><h2>Definitions</h2><dl>")
    for k, v in summary.get("definitions", {}).items():
        parts.append(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>")
    parts.append("</dl></body></html>")
    return "".join(parts)
