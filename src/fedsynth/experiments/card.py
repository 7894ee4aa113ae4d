"""Data cards: what a released synthetic cohort is, how it was made, how faithful and private it is, its licence.

The full card (``fedsynth export``) is a JSON-able dict rendered to Markdown and HTML by jinja2 templates shipped
in ``experiments/templates``; the short card (``fedsynth sample``) is a sidecar JSON with provenance, the figures
known for the model, and the licence. Cards hold aggregates only, never a real row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedsynth.errors import Problem

TEMPLATES = Path(__file__).parent / "templates"

#: What every card says first.
STATEMENT = "SYNTHETIC DATA — NOT REAL PATIENTS"
#: Licence of a source cohort fedsynth does not know and the user did not name.
UNKNOWN_LICENCE = "unknown — ask the data owner before sharing these files"
#: A column's fidelity below this, or a survival stratum's curve similarity below it, is a known limitation.
POOR_FIDELITY = 0.9
#: Keys under which the survival-effect fidelity may sit in a report (the strict survival figures, issue #11).
_EFFECT_KEYS = ("survival_effect_fidelity", "effect_fidelity")

INTENDED_USES = {
    "teaching": [
        ("Teaching and learning survival analysis, Kaplan-Meier curves, Cox models and data handling on a "
         "realistic cohort of this disease."),
        "Trying out code, pipelines and software before asking for access to real data.",
    ],
}
UNSUITABLE_USES = [
    "Any decision about a real patient (diagnosis, prognosis, treatment).",
    ("Scientific or clinical conclusions, publications of effects, or estimates presented as facts about "
     "patients: check every finding on the real data."),
    "Re-identifying, or trying to learn about, the patients of the source cohort.",
    "A control arm for a trial (fedsynth's arm workflow, with its own checks, is built for that).",
]


def _f(v: Any) -> float | None:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


# -- licence -------------------------------------------------------------------------------------------------


def source_licence(
    cohort: str | None,
    *,
    licence: str | None = None,
    attribution: str | None = None,
    problems: list[Problem] | None = None,
) -> dict[str, Any]:
    """Licence and attribution of the source cohort, carried through to everything derived from it.

    A registered cohort carries its own (``licence``, ``licence_id``, ``licence_url``, ``attribution`` = its
    citation); giving ``licence``/``attribution`` for it is a problem (appended to ``problems``), since the
    source's terms bind the synthetic cohort. Any other cohort takes the given ones, else
    :data:`UNKNOWN_LICENCE`.
    """
    from fedsynth.cohort.datasets import NAMED_COHORTS

    entry = NAMED_COHORTS.get(cohort or "")
    if entry is not None:
        if (licence or attribution) and problems is not None:
            problems.append(Problem(
                "--licence/--attribution", f"given for the registered cohort {entry.name!r}, whose terms are fixed",
                fix="leave them out; the card carries the source cohort's licence and attribution",
            ))
        return {"source_cohort": entry.name, "source_description": entry.description, "licence": entry.licence, "licence_id": entry.licence_id,
                "licence_url": entry.licence_url, "attribution": entry.citation, "known": True}
    return {"source_cohort": cohort or "unknown", "source_description": "", "licence": licence or UNKNOWN_LICENCE, "licence_id": "",
            "licence_url": "", "attribution": attribution or "unknown — name the source cohort and its owner when you "
            "share these files", "known": bool(licence)}


# -- provenance --------------------------------------------------------------------------------------------------


def provenance(source: Any, generator: Any) -> dict[str, Any]:
    """How the model was made: generator, strategy, sites and sizes, rounds, seeds, versions, DP; from the
    run's or fit's manifest, else from the model folder alone."""
    from fedsynth._io import versions as _versions

    m = source.manifest
    strat = dict(m.get("strategy") or {})
    data = dict(m.get("data") or {})
    dp = _epsilon_statement(m)
    sites = [dict(s) for s in m.get("sites") or []]
    return {
        "source_kind": {"run": "a federated or baseline run", "fit": "a centralised fit (fedsynth fit)",
                        "model": "a saved model folder"}[source.kind],
        "source_path": str(source.base_dir if source.kind != "model" else source.model_dir),
        "run_id": m.get("run_id"),
        "generator": generator.name,
        "generator_params": {k: v for k, v in generator.get_params().items() if not k.startswith("_")},
        "strategy": strat.get("name") or "unknown (bare model folder)",
        "engine": strat.get("engine"),
        "rounds": strat.get("rounds"),
        "local_epochs": strat.get("local_epochs"),
        "sites": sites,
        "n_sites": len(sites) or None,
        "n_train": data.get("n_train"),
        "n_holdout": data.get("n_holdout"),
        "data_fingerprint": data.get("fingerprint"),
        "seeds": {"seed": (m.get("seeds") or {}).get("seed"), "site_seeds": (m.get("seeds") or {}).get("site_seeds") or {}},
        "versions_training": m.get("versions") or {},
        "versions_export": _versions(),
        "differential_privacy": (dp[0] if dp else
                                 "no differential privacy (no privacy budget was set when the model was trained)"),
        "epsilon": dp[1] if dp else None,
    }


def _epsilon_statement(manifest: Mapping[str, Any]) -> tuple[str, float | str] | None:
    """The guarantee a run's manifest records (its ``privacy`` block: budget and epsilon spent, from the run's
    accountant), as ``(sentence, epsilon spent)``; ``None`` when the model was trained without a budget."""
    priv = manifest.get("privacy")
    if not isinstance(priv, Mapping) or not priv.get("budget"):
        return None
    budget = priv["budget"]
    spent = priv.get("epsilon_spent", budget.get("epsilon"))
    delta = budget.get("delta")
    text = (f"differential privacy: (epsilon, delta) = ({_num(spent)}, {delta}) spent of a budget of epsilon "
            f"{_num(budget.get('epsilon'))} (accountant: {priv.get('accountant', 'unknown')})")
    return text, spent


def _num(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


# -- figures -------------------------------------------------------------------------------------------------------


def effect_fidelity(report: Mapping[str, Any]) -> float | None:
    """The survival-effect fidelity of a report, wherever the strict survival figures put it (or ``None``)."""
    strict = report.get("survival_effects")
    if isinstance(strict, Mapping) and _f(strict.get("fidelity")) is not None:  # where evaluate() puts it
        return _f(strict.get("fidelity"))
    places: list[Any] = [report.get("scores") or {}, report.get("survival") or {}, report]
    places += [v for v in (report.get("survival") or {}).values() if isinstance(v, Mapping)]
    places += [v for k, v in report.items() if "effect" in str(k) and isinstance(v, Mapping)]
    for place in places:
        for key in _EFFECT_KEYS:
            v = place.get(key) if isinstance(place, Mapping) else None
            if isinstance(v, Mapping):
                v = v.get("value")
            if _f(v) is not None:
                return _f(v)
    return None


def limitations(report: Mapping[str, Any]) -> list[str]:
    """Where this cohort is known to be unfaithful, one sentence each: poor columns, poor survival strata
    (curve similarity below :data:`POOR_FIDELITY`), and prognostic effects significant in the real data that are
    reversed (significant the other way here) or lost (no significant effect here)."""
    out: list[str] = []
    cols = (report.get("fidelity") or {}).get("columns") or {}
    poor = sorted((v["similarity"], c) for c, v in cols.items() if _f(v.get("similarity")) is not None
                  and v["similarity"] < POOR_FIDELITY)
    if poor:
        out.append("Columns whose values are distributed unlike the real ones (similarity of 1): "
                   + ", ".join(f"{c} ({sim:.2f})" for sim, c in poor) + ".")
    surv = report.get("survival") or {}
    for ep in surv.get("endpoint_names") or []:
        strata = (surv.get(ep) or {}).get("strata") or {}
        off = [f"{col} = {g} ({sim:.2f})" for col, st in strata.items() for g, ge in (st.get("groups") or {}).items()
               if (sim := _f(ge.get("curve_similarity"))) is not None and sim < POOR_FIDELITY]
        if off:
            out.append(f"{ep} survival curves differ from the real ones for patients with " + ", ".join(off)
                       + " (curve similarity of 1).")
    rows = (surv.get("hazard_ratios") or {}).get("rows") or []
    for ep in surv.get("endpoint_names") or []:
        real_sig = [r for r in rows if r.get("endpoint") == ep and r.get("significant_real")
                    and _f(r.get("log_hr_real")) is not None and _f(r.get("log_hr_synthetic")) is not None]
        reversed_ = [r["variable"] for r in real_sig if r.get("same_direction") is False
                     and (_f(r.get("p_synthetic")) or 1.0) < 0.05]
        # Judged by size, not by p: a smaller export has less power, a weaker effect is weaker at any size.
        weak = [r["variable"] for r in real_sig if r["variable"] not in reversed_
                and (r.get("same_direction") is False or abs(r["log_hr_synthetic"]) < 0.5 * abs(r["log_hr_real"]))]
        n = len(real_sig)
        if reversed_:
            out.append(f"{len(reversed_)} of the {n} clear effects on {ep} in the real cohort are reversed here "
                       "(clearly the other way): " + ", ".join(reversed_) + ".")
        if weak:
            out.append(f"{len(weak)} of the {n} clear effects on {ep} in the real cohort are less than half as "
                       "strong here (log hazard ratio), or point the other way without being clear: "
                       + ", ".join(weak) + ".")
    util = ((report.get("utility") or {}).get("endpoints")) or {}
    for ep, v in util.items():
        c = _f(v.get("c_index_train_synthetic"))
        if c is not None and c <= 0.5:
            out.append(f"A survival model for {ep} trained on these rows predicts real patients no better than chance "
                       f"(C-index {c:.2f}; 0.5 = chance): do not use them to build or teach {ep} prediction.")
    return out


def fidelity_section(report: Mapping[str, Any]) -> dict[str, Any]:
    sc = report.get("scores") or {}
    fid = report.get("fidelity") or {}
    util = ((report.get("utility") or {}).get("endpoints")) or {}

    def comps(key: str) -> dict[str, float | None]:
        return {k: _f(v.get("value")) for k, v in ((sc.get(key) or {}).get("components") or {}).items()}

    return {
        "csf": _f((sc.get("csf") or {}).get("value")),
        "gsf": _f((sc.get("gsf") or {}).get("value")),
        "csf_components": comps("csf"),
        "gsf_components": comps("gsf"),
        "survival_effect_fidelity": effect_fidelity(report),
        "column_fidelity": _f(fid.get("mean_similarity")),
        "pair_fidelity": _f((fid.get("pairs") or {}).get("mean_similarity")),
        "detection_auc": _f((fid.get("detection") or {}).get("auc")),
        "tstr": {ep: {"c_index_train_real": _f(v.get("c_index_train_real")),
                      "c_index_train_synthetic": _f(v.get("c_index_train_synthetic"))} for ep, v in util.items()},
        "limitations": limitations(report),
    }


def privacy_section(report: Mapping[str, Any], gate: Any, allow_flagged: str | None) -> dict[str, Any]:
    pv = report.get("privacy") or {}
    nndr = pv.get("nndr") or {}
    return {
        "nndr_mean": _f((nndr.get("synthetic") or {}).get("mean")),
        "nndr_p5": _f((nndr.get("synthetic") or {}).get("p5")),
        "nndr_mean_holdout": _f((nndr.get("holdout") or {}).get("mean")),
        "nndr_p5_holdout": _f((nndr.get("holdout") or {}).get("p5")),
        "dcr_share": _f(pv.get("dcr_share")),
        "mia_auc": _f(pv.get("mia_auc")),
        "exact_copies": _f(pv.get("exact_copies")),
        "exact_copies_holdout": _f(pv.get("exact_copies_holdout")),
        "exact_copies_shared": _f(pv.get("exact_copies_shared")),
        "exact_copies_holdout_shared": _f(pv.get("exact_copies_holdout_shared")),
        "report_flags": list(pv.get("flags") or []),
        "gate": gate.to_dict(),
        "released_despite_flags": allow_flagged if not gate.passed else None,
    }


# -- the card ----------------------------------------------------------------------------------------------------


def build_card(
    source: Any,
    generator: Any,
    report: Mapping[str, Any],
    gate: Any,
    dictionary: Sequence[Mapping[str, Any]],
    licence: Mapping[str, Any],
    *,
    n_samples: int,
    purpose: str,
    random_state: int,
    allow_flagged: str | None,
    real_origin: str,
    analysis: Any,
    files: Mapping[str, str],
) -> dict[str, Any]:
    """The full data card as a JSON-able dict (rendered by :func:`render_markdown` and :func:`render_html`); its known
    limitations are the measured ones (:func:`limitations`) and the model's survival warnings
    (:meth:`~fedsynth.generators.base.BaseGenerator.survival_notes`)."""
    from dataclasses import asdict

    from fedsynth.generators import survival_notes

    made = provenance(source, generator)
    cohort = licence["source_cohort"]
    created = datetime.now(UTC).isoformat(timespec="seconds")
    version = made["versions_export"].get("fedsynth", "?")
    # "the MDS cohort" reads well, "the cohort cohort" (a file named cohort.csv) does not
    named = cohort if cohort.lower().endswith("cohort") else f"{cohort} cohort"
    title = f"Synthetic {named} for {purpose}"
    info = report.get("info") or {}
    rows = info.get("rows") or {}
    fidelity = fidelity_section(report)
    # the model's own survival warnings (e.g. VAE-BGM's calibration at its bound) beside what was measured
    fidelity["limitations"] = [*fidelity["limitations"], *survival_notes(generator, under_condition=False)]
    cite = (f"{title} ({n_samples:,} synthetic patients), generated with fedsynth {version} "
            f"({made['generator']}, strategy {made['strategy']}, export seed {random_state}) on {created[:10]}. "
            f"Derived from: {licence['attribution']}")
    return {
        "card_version": 1,
        "title": title,
        "statement": STATEMENT,
        "summary": (f"{n_samples:,} synthetic patients drawn from a {made['generator'].replace('_', ' ')} model "
                    f"trained on the {named}"
                    + (f" ({licence['source_description']})" if licence.get("source_description") else "")
                    + ". Every row is made up by the model: the table resembles the real cohort as a whole, "
                    "and no row is a real person."),
        "purpose": purpose,
        "created_utc": created,
        "rows": n_samples,
        "columns": len(dictionary),
        "files": dict(files),
        "made": {**made, "export_seed": random_state},
        "evaluation": {
            "against": real_origin,
            "n_real": rows.get("real"),
            "n_holdout": rows.get("holdout"),
            "random_state": info.get("random_state"),
            "reproduce": "fedsynth evaluate --real TRAIN.csv --synthetic synthetic.csv --holdout HOLDOUT.csv "
                         f"--seed {random_state} gives the same figures on the same rows",
        },
        "fidelity": fidelity,
        "privacy": privacy_section(report, gate, allow_flagged),
        "uses": {"intended": INTENDED_USES.get(purpose, []), "unsuitable": UNSUITABLE_USES},
        "licence": dict(licence),
        "cite": cite,
        "teaching": None if analysis is None else asdict(analysis),
        "dictionary": [dict(d) for d in dictionary],
    }


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = lambda v, d=3: "—" if v is None else f"{v:.{d}f}"
    env.filters["pct"] = lambda v, d=2: "—" if v is None else f"{100 * v:.{d}f}%"
    return env


def render_markdown(card: Mapping[str, Any]) -> str:
    """The card as Markdown (``card.md.j2``)."""
    return str(_env().get_template("card.md.j2").render(card=card, FIGURE_HELP=FIGURE_HELP))


def render_html(card: Mapping[str, Any]) -> str:
    """The card as one self-contained HTML page (``card.html.j2``; no script, no network)."""
    return str(_env().get_template("card.html.j2").render(card=card, FIGURE_HELP=FIGURE_HELP))


#: Plain-language meaning of each figure, for readers who never heard of fedsynth.
FIGURE_HELP = {
    "csf": "Clinical fidelity (0-1, higher is better): do clinical values, their relations and survival look "
           "like the real cohort's?",
    "gsf": "Genomic fidelity (0-1, higher is better): are gene mutations as frequent, co-occurring and "
           "prognostic as in the real cohort?",
    "survival_effect_fidelity": "Survival-effect fidelity (0-1): are the real cohort's prognostic effects kept "
                                "in size, not only in direction?",
    "nndr_p5": "How close the closest synthetic rows come to real training patients (nearest / second-nearest "
               "distance ratio, 5th percentile; 0 = a copy). It should not be lower than for real patients who "
               "were not used for training.",
    "dcr_share": "Share of synthetic rows nearer to training patients than to unused real patients (0.5 is ideal).",
    "mia_auc": "How well an attacker can tell who was in the training data from these rows (0.5 = no better "
               "than a coin toss).",
    "exact_copies": "Share of synthetic rows identical to a training patient in every column.",
    "exact_copies_shared": "Of those, rows identical to a record with no number known that several training "
                           "patients share (when little is known of patients, their records coincide): such a copy "
                           "names nobody, and the release gate sets it apart.",
}


# -- short card (fedsynth sample) ------------------------------------------------------------------------------


def short_card(model_dir: str | Path, *, n_samples: int, random_state: int,
               conditions: Mapping[str, Any] | None = None, where: str | None = None,
               draw: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The short form of the data card for rows drawn by ``fedsynth sample`` or ``fedsynth arm``: provenance, the
    figures known for the model (its run's final evaluation: other draws of the same model, not these rows), the
    model's survival warnings (:meth:`~fedsynth.generators.base.BaseGenerator.survival_notes`) and the licence.
    ``draw`` (an arm's :func:`~fedsynth.experiments.arm.describe_draw`) goes under ``sample.draw``."""
    from fedsynth.experiments.export import resolve_source
    from fedsynth.generators import load_generator, survival_notes

    source = resolve_source(model_dir)
    gen = load_generator(source.model_dir)
    made = provenance(source, gen)
    cohort = source.cohort_name or gen.schema.name
    figures = None
    rep = source.report or {}
    final = (rep.get("final") or {}).get("evaluation") if "final" in rep else (rep if "scores" in rep else None)
    if isinstance(final, Mapping):
        fid = fidelity_section(final)
        pv = final.get("privacy") or {}
        figures = {
            "of": "the model's own evaluation when it was trained (another sample of the same model, scored "
                  "against its training rows) — not these rows; run fedsynth export for figures of a release",
            "csf": fid["csf"], "gsf": fid["gsf"], "survival_effect_fidelity": fid["survival_effect_fidelity"],
            "nndr_p5": _f(((pv.get("nndr") or {}).get("synthetic") or {}).get("p5")),
            "nndr_p5_holdout": _f(((pv.get("nndr") or {}).get("holdout") or {}).get("p5")),
            "dcr_share": _f(pv.get("dcr_share")), "mia_auc": _f(pv.get("mia_auc")),
            "exact_copies": _f(pv.get("exact_copies")), "privacy_flags": list(pv.get("flags") or []),
        }
    return {
        "card_version": 1,
        "form": "short",
        "statement": STATEMENT,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": n_samples,
        "sample": {"seed": random_state, "conditions": dict(conditions or {}), "where": where,
                   **({"draw": dict(draw)} if draw is not None else {})},
        "made": made,
        "figures": figures,
        "licence": source_licence(cohort),
        "note": "Rows drawn under conditions describe only the patients who meet them." if conditions or where
        else None,
        # what fedsynth sample / arm warned about the model's survival (e.g. VAE-BGM's calibration at its bound)
        "survival_warnings": survival_notes(gen, under_condition=bool(conditions) or where is not None),
    }


def write_short_card(csv_path: str | Path, model_dir: str | Path, *, n_samples: int, random_state: int,
                     conditions: Mapping[str, Any] | None = None, where: str | None = None,
                     draw: Mapping[str, Any] | None = None) -> Path:
    """Write :func:`short_card` beside ``csv_path`` as ``<name>.card.json``; returns its path."""
    from fedsynth._io import atomic_write_text

    path = Path(csv_path)
    target = path.with_name(path.stem + ".card.json")
    card = short_card(model_dir, n_samples=n_samples, random_state=random_state, conditions=conditions, where=where,
                      draw=draw)
    atomic_write_text(target, json.dumps(card, indent=2, default=str))
    return target
