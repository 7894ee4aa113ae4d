"""The teaching kit of an export (purpose ``teaching``): a seeded train/test split and a notebook that
reproduces one survival analysis (Kaplan-Meier by a binary column, log-rank, Cox), chosen by role and data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind, ColumnRole, TableSchema
from fedsynth.experiments.dictionary import split_description

#: Share of the export that goes to ``test.csv`` in a teaching export.
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class TeachingAnalysis:
    """The survival analysis the teaching notebook reproduces, chosen from the schema and the export."""

    endpoint: str
    duration_col: str
    event_col: str
    time_unit: str
    group_col: str
    group_meaning: str
    covariates: tuple[str, ...]
    logrank_p: float


def choose_analysis(data: pd.DataFrame, schema: TableSchema, *, min_share: float = 0.05,
                    min_events: int = 10) -> TeachingAnalysis | None:
    """Pick the binary column whose groups differ most in survival (smallest log-rank p) on ``data``.

    Candidates are binary columns that are not an endpoint's event: genes (role ``genomic``) first, clinical
    binaries only when no gene qualifies. A candidate needs each group to hold ``min_share`` of the rows with a
    known value and ``min_events`` events. The Cox model adds up to two numeric clinical columns (not derived)
    that are missing in at most 10% of rows, in schema order. Chosen by role and data, never by column name.
    Returns ``None`` when the schema has no endpoint or no binary column qualifies.
    """
    from lifelines.statistics import logrank_test

    eps = [ep for ep in schema.endpoints if ep.duration_col in data.columns and ep.event_col in data.columns]
    if not eps:
        return None
    ep = eps[0]
    events = {e.event_col for e in schema.endpoints}
    binaries = [c for c in schema.data_columns if c in data.columns and schema[c].kind is ColumnKind.BINARY
                and c not in events]
    genes = [c for c in binaries if schema[c].role is ColumnRole.GENOMIC]
    clinical = [c for c in binaries if schema[c].role is ColumnRole.CLINICAL]
    best: tuple[float, str] | None = None
    for pool in (genes, clinical):
        for col in pool:
            rows = data[[ep.duration_col, ep.event_col, col]].dropna()
            g = rows[col] == 1
            if min(g.mean(), 1 - g.mean()) < min_share or min(rows.loc[g, ep.event_col].sum(),
                                                               rows.loc[~g, ep.event_col].sum()) < min_events:
                continue
            res = logrank_test(rows.loc[g, ep.duration_col], rows.loc[~g, ep.duration_col],
                               rows.loc[g, ep.event_col], rows.loc[~g, ep.event_col])
            p = float(res.p_value)
            if best is None or p < best[0]:
                best = (p, col)
        if best is not None:
            break
    if best is None:
        return None
    covs = [c for c in schema.clinical_columns if c in data.columns and schema[c].is_numeric
            and schema[c].derived is None and data[c].isna().mean() <= 0.10][:2]
    meaning, _ = split_description(schema[best[1]])
    return TeachingAnalysis(ep.name, ep.duration_col, ep.event_col, ep.time_unit, best[1], meaning or best[1],
                            tuple(covs), best[0])


def teaching_notebook(analysis: TeachingAnalysis | None, *, train_csv: str = "train.csv",
                      test_csv: str = "test.csv") -> Any:
    """A short Jupyter notebook (nbformat v4) that loads the split and reproduces one survival analysis:
    Kaplan-Meier curves by ``analysis.group_col`` with a log-rank test, then a Cox model (lifelines)."""
    import importlib

    # nbformat ships no type hints: one Any handle keeps the calls below strict-clean.
    nbv4: Any = importlib.import_module("nbformat.v4")
    new_code_cell, new_markdown_cell, new_notebook = nbv4.new_code_cell, nbv4.new_markdown_cell, nbv4.new_notebook

    cells = [new_markdown_cell(
        "# A survival analysis on a synthetic cohort\n\n"
        "**Every patient in these files is synthetic — none is a real person.** The rows were drawn from a model "
        "trained on a real cohort; they keep its patterns (see the data card, `card.html`), not its patients.\n\n"
        f"`{train_csv}` and `{test_csv}` are a fixed random split of `synthetic.csv`: fit on the first, check on "
        "the second."
    ), new_code_cell(
        "import pandas as pd\n"
        "import matplotlib.pyplot as plt\n"
        "from lifelines import CoxPHFitter, KaplanMeierFitter\n"
        "from lifelines.statistics import logrank_test\n\n"
        f"train = pd.read_csv({train_csv!r})\n"
        f"test = pd.read_csv({test_csv!r})\n"
        "print(len(train), 'training rows,', len(test), 'test rows')\n"
        "train.head()"
    )]
    if analysis is None:
        cells.append(new_markdown_cell(
            "This cohort has no survival endpoint with a binary column that splits it into two groups with "
            "enough events, so no survival analysis is set up here. Explore the columns with "
            "`train.describe()` and the data dictionary."))
        return new_notebook(cells=cells)
    a = analysis
    cells += [new_markdown_cell(
        f"## Kaplan-Meier curves: {a.endpoint} by {a.group_col}\n\n"
        f"`{a.duration_col}` is the time ({a.time_unit}) and `{a.event_col}` says whether the event happened "
        f"(1) or the patient was censored (0). `{a.group_col}`: {a.group_meaning}. Rows with a missing value "
        "in these columns are left out."
    ), new_code_cell(
        f"time, event, group = {a.duration_col!r}, {a.event_col!r}, {a.group_col!r}\n"
        "km_rows = train[[time, event, group]].dropna()\n"
        "fig, ax = plt.subplots(figsize=(7, 4.5))\n"
        "for value, rows in km_rows.groupby(group):\n"
        "    KaplanMeierFitter().fit(rows[time], rows[event], label=f'{group} = {int(value)} (n={len(rows)})')"
        ".plot_survival_function(ax=ax)\n"
        f"ax.set_xlabel('time ({a.time_unit})')\n"
        "ax.set_ylabel('share without the event')\n"
        "plt.show()\n"
        "one, zero = km_rows[km_rows[group] == 1], km_rows[km_rows[group] == 0]\n"
        "result = logrank_test(one[time], zero[time], one[event], zero[event])\n"
        "print(f'log-rank test: p = {result.p_value:.2g}')"
    ), new_markdown_cell(
        "## A Cox proportional-hazards model\n\n"
        f"The hazard ratio of `{a.group_col}`"
        + (f", adjusted for {', '.join(f'`{c}`' for c in a.covariates)}" if a.covariates else "")
        + ". A hazard ratio above 1 means the event comes sooner. The concordance index on the test rows "
        "says how well the model ranks patients it was not fitted on (0.5 = chance)."
    ), new_code_cell(
        f"columns = [time, event, group] + {list(a.covariates)!r}\n"
        "cox = CoxPHFitter()\n"
        "cox.fit(train[columns].dropna(), duration_col=time, event_col=event)\n"
        "cox.print_summary(decimals=3)\n"
        "print('concordance on the test rows:', round(cox.score(test[columns].dropna(), "
        "scoring_method='concordance_index'), 3))"
    ), new_markdown_cell(
        "## To discuss\n\n"
        "- Is the effect of the group as strong here as in the published analysis of the real cohort? "
        "The data card lists the effects this synthetic cohort is known to distort.\n"
        "- Why can't a conclusion drawn from synthetic patients replace one drawn from real patients?"
    )]
    return new_notebook(cells=cells)


def teaching_split(data: pd.DataFrame, *, random_state: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded train/test split of an export (``TEST_FRACTION`` of the rows to test, row order kept)."""
    rng = np.random.default_rng(random_state)
    n_test = round(len(data) * TEST_FRACTION)
    test_idx = np.sort(rng.permutation(len(data))[:n_test])
    mask = np.zeros(len(data), dtype=bool)
    mask[test_idx] = True
    return data.loc[~mask].reset_index(drop=True), data.loc[mask].reset_index(drop=True)
