"""HTML rendering of reports: the figures of :mod:`.charts` as inline SVG in jinja2 templates shipped in the package.

One standalone file per page (inline CSS and SVG; no script, no external asset). Everything drawn comes from the
JSON-able report (aggregates, curves, binned distributions), never from rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedsynth.evaluation import charts

TEMPLATES = Path(__file__).parent / "templates"


def _p(p: Any) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-3 else "<0.001"


def _svg(item: Any) -> Any:
    """Figures (alone, in lists or in dicts) replaced by their SVG text; None stays None."""
    if isinstance(item, Mapping):
        return {k: _svg(v) for k, v in item.items()}
    if isinstance(item, list):
        return [_svg(v) for v in item]
    return None if item is None else charts.figure_svg(item)


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

    def sig(v: Any, digits: int = 3) -> str:
        """A float to ``digits`` significant digits (a CI bound near 0 keeps its sign and size: -0.000412)."""
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return fmt(v)
        return f"{v:.{digits}g}"

    def num(v: Any) -> str:
        """A number as written in a criteria file: 65.0 -> 65, 0.5 -> 0.5."""
        return "—" if v is None else f"{float(v):g}"

    env.filters["fmt"] = fmt
    env.filters["num"] = num
    env.filters["sig"] = sig
    env.filters["pct"] = pct
    env.filters["pval"] = _p
    env.filters["hr"] = hazard_ratio_text
    from fedsynth.evaluation.survival_effects import MEDIAN_FLAG, TIE_FLAG

    env.globals["median_flag"] = MEDIAN_FLAG  # the one threshold the reports flag median errors at
    env.globals["tie_flag"] = TIE_FLAG  # and the one they flag a time-order rule's tie share at
    return env


#: |log HR| past which a hazard ratio is written as a bound: a Cox fit on a covariate that separates the events
#: (e.g. an undertrained model's synthetic rows) returns log HRs in the hundreds, whose exp overflows a float.
_LOG_HR_SHOWN = math.log(1e6)


def hazard_ratio_text(log_hr: Any) -> str:
    """A hazard ratio from its log for a report cell: two decimals, "> 1e6" / "< 1e-6" past those bounds (a
    separated covariate), "—" when missing or not finite."""
    if log_hr is None or not math.isfinite(float(log_hr)):
        return "—"
    v = float(log_hr)
    if abs(v) > _LOG_HR_SHOWN:
        return "> 1e6" if v > 0 else "< 1e-6"
    return f"{math.exp(v):.2f}"


def report_plots(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report's figures (:func:`charts.report_figures`) as SVG text, under the same keys."""
    plots: dict[str, Any] = _svg(charts.report_figures(report))
    return plots


def report_html(report: Mapping[str, Any], *, title: str) -> str:
    """One evaluation report as a standalone HTML page."""
    html: str = _env().get_template("report.html.j2").render(r=report, plots=report_plots(report), title=title)
    return html


def rounds_html(
    rounds: Sequence[Mapping[str, Any]],
    references: Mapping[str, Mapping[str, Any]],
    final: Mapping[str, Any] | None,
    *,
    title: str,
    arms: Sequence[Mapping[str, Any]] = (),
    sections: Sequence[Mapping[str, Any]] = (),
    facts: Sequence[tuple[str, str]] = (),
    scored_at_sites: bool = False,
) -> str:
    """Scores by round (with a line per reference model, when there are any), the extra ``sections``, the control
    arms when there are any, then the final report when there is one, as one HTML page; ``facts`` (label, text)
    are listed under the title, ``scored_at_sites`` says the rounds were scored at the sites (a deployment)."""
    from fedsynth.evaluation.arm import arm_plots

    html: str = _env().get_template("rounds.html.j2").render(
        rounds=rounds, references=references, title=title, sections=list(sections), facts=list(facts),
        scored_at_sites=scored_at_sites,
        rounds_plots=_svg(charts.rounds_figures(rounds, references)),
        r=final, plots=report_plots(final) if final is not None else None,
        value=charts.round_value,
        arms=arms, arm_plots=[arm_plots(a["report"]) if a.get("report") else {} for a in arms],
    )
    return html
