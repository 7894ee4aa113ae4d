"""SAFE-style evaluation of synthetic cohorts: fidelity, genomics, survival, utility, privacy, CSF and GSF.

Public API (see :mod:`fedsynth.evaluation.report` for full signatures)::

    evaluate(real_data, synthetic_data, schema, *, holdout_data=None, random_state=None, strata=None,
             detection=True, utility=True) -> EvaluationReport     # .to_dict(), .to_json(path), .to_html(path)
    quick_scores(real_data, synthetic_data, schema, *, holdout_data=None, random_state=None) -> dict
    render_rounds_html(rounds, references, final, path, *, title="Scores by round", arms=()) -> Path
    DEFINITIONS  # the exact score definitions every report states

This package imports only :mod:`fedsynth.cohort` and :mod:`fedsynth.errors` from fedsynth.
"""

from fedsynth.evaluation.report import EvaluationReport, evaluate, quick_scores, render_rounds_html
from fedsynth.evaluation.scores import DEFINITIONS

__all__ = ["DEFINITIONS", "EvaluationReport", "evaluate", "quick_scores", "render_rounds_html"]
