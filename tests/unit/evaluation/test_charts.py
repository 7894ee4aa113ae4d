"""The report charts read from their matplotlib objects: what each chart shows (lines, labels, ticks, legend), and
the SVG text being small, standalone and reproducible."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import StepPatch

from fedsynth.evaluation import charts


def _legend_labels(fig: Figure) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    return [t.get_text() for lg in legends if lg is not None for t in lg.get_texts()]


def _labelled_lines(fig: Figure) -> dict[str, Any]:
    return {ln.get_label(): ln for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")}


def _endpoint(groups: dict[str, Any] | None = None) -> dict[str, Any]:
    grid = [0.0, 1.0, 2.0, 3.0]
    return {
        "grid": grid, "time_unit": "years",
        "overall": {"real": [1.0, 0.8, 0.5, 0.4], "synthetic": [1.0, 0.7, 0.5, 0.3], "curve_similarity": 0.95},
        "strata": {} if groups is None else {"G": {"groups": groups, "logrank_p_real": 0.0001,
                                                    "logrank_p_synthetic": 0.2}},
    }


# -- scores by round -------------------------------------------------------------------------------------------


def test_rounds_chart_ticks_whole_rounds_and_zooms_to_the_scores() -> None:
    # Setup
    refs = {"centralized": 0.93, "site-1 alone": 0.85}
    # Run
    fig = charts.rounds_figure({"federated rounds": [(1, 0.88), (2, 0.9), (3, 0.91)]}, refs, title="CSF by round")
    ax = fig.axes[0]
    # Assert: ticks on rounds 1, 2, 3 only (no 1.5), half a round of margin, y from 0.8 (0.1 below 0.85 - 0.02)
    assert list(ax.get_xticks()) == [1, 2, 3]
    assert ax.get_xlim() == (0.5, 3.5)
    assert ax.get_ylim()[0] == pytest.approx(0.8)
    assert ax.get_ylim()[1] == pytest.approx(1.02)


def test_a_single_round_sits_mid_axis_as_a_point() -> None:
    # Run
    fig = charts.rounds_figure({"federated rounds": [(1, 0.9)]}, {"centralized": 0.93}, title="CSF")
    ax = fig.axes[0]
    line = _labelled_lines(fig)["federated rounds"]
    # Assert: one marked point at x = 1, the middle of (0.5, 1.5), and a single tick
    assert list(line.get_xdata()) == [1] and line.get_marker() == "o"
    assert sum(ax.get_xlim()) / 2 == 1.0
    assert list(ax.get_xticks()) == [1]


def test_many_rounds_keep_whole_round_ticks_at_most_about_ten() -> None:
    # Run
    fig = charts.rounds_figure({"fed": [(r, 0.9) for r in range(1, 31)]}, {}, title="CSF")
    ticks = fig.axes[0].get_xticks()
    # Assert
    assert all(float(t).is_integer() for t in ticks) and len(ticks) <= 10 and ticks[0] == 1


def test_reference_lines_differ_by_colour_and_dash_and_all_are_in_the_legend() -> None:
    # Setup
    refs = {"centralized": 0.95, "site-1 alone": 0.8, "site-2 alone": 0.7, "site-3 alone": 0.6, "broken": float("nan")}
    # Run
    fig = charts.rounds_figure({"federated rounds": [(1, 0.9), (2, 0.92)]}, refs, title="CSF")
    lines = _labelled_lines(fig)
    # Assert: four reference lines (the NaN one left out), each with its own colour and its own dash pattern,
    # none solid like the score curve; every line named in the legend
    ref_lines = [lines[k] for k in ("centralized", "site-1 alone", "site-2 alone", "site-3 alone")]
    assert "broken" not in lines
    assert len({ln.get_color() for ln in ref_lines}) == 4
    # (a custom dash sequence reads as "--" through get_linestyle; the pattern itself has no public getter)
    assert len({str(ln._unscaled_dash_pattern) for ln in ref_lines}) == 4
    assert all(ln.get_linestyle() != "-" for ln in ref_lines) and lines["federated rounds"].get_linestyle() == "-"
    assert _legend_labels(fig) == ["federated rounds", "centralized", "site-1 alone", "site-2 alone", "site-3 alone"]


def test_the_legend_sits_outside_the_plot_where_it_hides_no_point() -> None:
    # Setup
    fig = charts.rounds_figure({"federated rounds": [(1, 0.9), (2, 0.92)]},
                               {"centralized": 0.95, "site-1 alone": 0.8}, title="CSF")
    # Run
    assert isinstance(fig.canvas, FigureCanvasAgg)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    legend_box = fig.legends[0].get_window_extent(renderer)
    axes_box = fig.axes[0].get_window_extent(renderer)
    # Assert: the legend is below the axes, not on them
    assert legend_box.y1 <= axes_box.y0
    assert fig.axes[0].get_legend() is None


def test_rounds_figures_read_nndr_p5_from_the_nested_quick_scores() -> None:
    # Run
    figs = charts.rounds_figures([{"round": 1, "csf": 0.9, "nndr": {"synthetic": {"mean": 0.9, "p5": 0.5}}}],
                                 {"centralized": {"csf": 0.95}})
    # Assert
    assert [f.axes[0].get_title() for f in figs] == ["CSF by round", "GSF by round", "NNDR 5th percentile by round"]
    assert list(_labelled_lines(figs[2])["federated rounds"].get_ydata()) == [0.5]
    assert "federated rounds" not in _labelled_lines(figs[1])  # no GSF: nothing drawn, nothing breaks
    assert charts.round_value({"nndr": None}, "nndr_p5") is None


# -- survival -------------------------------------------------------------------------------------------------


def test_km_overall_draws_real_solid_and_synthetic_dashed_on_the_grid() -> None:
    # Run
    (fig,) = charts.km_figures("OS", _endpoint())
    lines = _labelled_lines(fig)
    ax = fig.axes[0]
    # Assert
    assert set(lines) == {"real", "synthetic"}
    assert list(lines["real"].get_ydata()) == [1.0, 0.8, 0.5, 0.4]
    assert lines["real"].get_drawstyle() == "steps-post" and lines["synthetic"].get_linestyle() == "--"
    assert ax.get_ylim() == (0.0, 1.02) and "0.950" in ax.get_title()


def test_km_by_stratum_pairs_each_groups_real_and_synthetic_curves_by_colour() -> None:
    # Setup: group b has too few synthetic rows for a curve
    groups = {"a": {"real": [1, 0.9, 0.8, 0.7], "synthetic": [1, 0.85, 0.8, 0.6]},
              "b": {"real": [1, 0.5, 0.3, 0.2], "synthetic": None}}
    # Run
    _, by_group = charts.km_figures("OS", _endpoint(groups))
    ax = by_group.axes[0]
    # Assert: three curves (a real, a synthetic, b real), a's two in one colour; legend names groups and styles
    assert len(ax.get_lines()) == 3
    a_real, a_syn, b_real = ax.get_lines()
    assert a_real.get_color() == a_syn.get_color() != b_real.get_color()
    assert _legend_labels(by_group) == ["G=a", "G=b", "real", "synthetic"]
    assert "<0.001" in ax.get_xlabel() and "0.2" in ax.get_xlabel()


# -- genomics -------------------------------------------------------------------------------------------------


def test_gene_frequencies_of_sixty_genes_show_the_top_thirty_as_horizontal_bars() -> None:
    # Setup: 60 genes, real frequency falling with the index; G59 is rare in real data but common in synthetic
    genes = [f"G{i}" for i in range(60)]
    real = {g: 0.3 - 0.004 * i for i, g in enumerate(genes)}
    syn = dict(real, G59=0.5)
    # Run
    fig = charts.gene_frequency_figure({"genes": genes, "frequency": {"real": real, "synthetic": syn}})
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    # Assert: 30 genes, most frequent (real) on top, the over-produced G59 among them, bars horizontal in %
    assert len(labels) == 30 and labels[0] == "G0" and "G59" in labels and "G29" not in labels
    real_bars, syn_bars = ax.containers
    assert len(real_bars) == len(syn_bars) == 30
    assert real_bars[0].get_width() == pytest.approx(30.0) and real_bars[0].get_height() < 1
    assert ax.get_title() == "Mutation frequency, top 30 of 60 genes"
    assert _legend_labels(fig) == ["real", "synthetic"]


def test_cooccurrence_maps_share_one_clipped_scale_and_stack_beyond_thirty_genes() -> None:
    # Setup
    def heatmap(n: int) -> dict[str, Any]:
        m = [[None if i == j else 5.0 * (-1) ** (i + j) for j in range(n)] for i in range(n)]
        return {"heatmap": {"genes": [f"G{i}" for i in range(n)], "real": m, "synthetic": m}}

    # Run
    small, large = charts.cooccurrence_figure(heatmap(4)), charts.cooccurrence_figure(heatmap(40))
    # Assert: two maps (plus a colour bar), values clipped at +/-3, side by side for 4 genes, stacked for 40
    assert small is not None and large is not None
    maps = [ax for ax in small.axes if ax.images and ax.get_title()]
    assert [ax.get_title() for ax in maps] == ["log odds ratio, real", "log odds ratio, synthetic"]
    image = maps[0].images[0]
    assert image.get_clim() == (-3.0, 3.0) and np.nanmax(image.get_array()) == 3.0
    left, right = (ax.get_position() for ax in maps)
    assert right.x0 > left.x1
    top, bottom = (ax.get_position() for ax in large.axes if ax.images and ax.get_title())
    assert top.y0 > bottom.y1
    assert charts.cooccurrence_figure({"heatmap": {"genes": [], "real": [], "synthetic": []}}) is None


# -- fidelity and privacy ------------------------------------------------------------------------------------


def test_pair_loss_map_is_symmetric_one_minus_similarity() -> None:
    # Setup
    fidelity = {"pairs": {"pairs": [["a", "b", "contingency", 0.9], ["a", "c", "correlation", 0.6]]}}
    # Run
    fig = charts.pair_loss_figure(fidelity, ["a", "b", "c"])
    matrix = fig.axes[0].images[0].get_array()
    # Assert
    assert matrix[0, 1] == matrix[1, 0] == pytest.approx(0.1)
    assert matrix[0, 2] == pytest.approx(0.4) and np.ma.is_masked(matrix[1, 2])


def test_distributions_draw_numeric_histograms_as_steps_and_categories_as_bars() -> None:
    # Setup
    fidelity = {
        "distributions": {
            "x": {"type": "histogram", "edges": [0, 1, 2], "real": [0.5, 0.5], "synthetic": [0.4, 0.6],
                  "missing_real": 0.0, "missing_synthetic": 0.1},
            "c": {"type": "categorical", "labels": ["a", "b", "(missing)"], "real": [0.5, 0.4, 0.1],
                  "synthetic": [0.6, 0.4, 0.0]},
        },
        "columns": {"x": {"similarity": 0.9}, "c": {"similarity": 0.8}},
    }
    # Run
    hist, bars = charts.distribution_figures(fidelity, ["x", "c", "no-distribution"])
    # Assert
    steps = [p for p in hist.axes[0].patches if isinstance(p, StepPatch)]
    assert len(steps) == 2 and list(steps[1].get_data().values) == [0.4, 0.6]
    assert "10% synthetic" in hist.axes[0].get_xlabel() and hist.axes[0].get_title() == "x: 1-KS 0.900"
    assert [len(c) for c in bars.axes[0].containers] == [3, 3]
    assert [t.get_text() for t in bars.axes[0].get_xticklabels()] == ["a", "b", "(missing)"]


def test_nndr_chart_draws_the_holdout_line_and_both_fifth_percentiles() -> None:
    # Setup
    privacy = {"nndr": {"synthetic": {"mean": 0.8, "p5": 0.3}, "holdout": {"mean": 0.85, "p5": 0.45},
                        "histogram": {"edges": [0, 0.5, 1], "synthetic": [0.2, 0.8], "holdout": [0.1, 0.9]}}}
    # Run
    fig = charts.nndr_figure(privacy)
    assert fig is not None
    ax = fig.axes[0]
    # Assert
    steps = {p.get_label(): p for p in ax.patches if isinstance(p, StepPatch)}
    assert set(steps) == {"synthetic -> training", "holdout -> training"}
    assert list(steps["holdout -> training"].get_data().values) == [0.1, 0.9]
    vertical = {ln.get_label(): ln.get_xdata()[0] for ln in ax.get_lines()}
    assert vertical == {"synthetic 5th percentile 0.300": 0.3, "holdout 5th percentile 0.450": 0.45}
    assert len(_legend_labels(fig)) == 4
    no_holdout = charts.nndr_figure({"nndr": {"synthetic": {"p5": 0.3}, "holdout": None,
                                              "histogram": {"edges": [0, 1], "synthetic": [1.0], "holdout": None}}})
    assert no_holdout is not None and _legend_labels(no_holdout) == ["synthetic -> training",
                                                                      "synthetic 5th percentile 0.300"]
    assert charts.nndr_figure({"nndr": {}}) is None


# -- SVG text ---------------------------------------------------------------------------------------------------


def test_svg_is_inline_text_without_dates_and_the_same_for_the_same_figure() -> None:
    # Setup
    def build() -> Figure:
        return charts.rounds_figure({"federated rounds": [(1, 0.9), (2, 0.95)]}, {"centralized": 0.97}, title="CSF")

    # Run
    first, second = charts.figure_svg(build()), charts.figure_svg(build())
    # Assert: reproducible bytes; an <svg> element (no XML prolog, no metadata); labels as text, not glyph paths
    assert first == second
    assert first.startswith('<svg role="img" aria-label="CSF"') and first.endswith("</svg>")
    assert "<?xml" not in first and "<metadata" not in first and "<dc:date" not in first
    assert ">centralized</text>" in first and "<script" not in first and "http://" not in first.replace(
        'xmlns="http://www.w3.org/2000/svg"', "").replace('xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    assert len(first) < 20_000


def test_building_a_chart_leaves_matplotlibs_global_settings_alone() -> None:
    # Setup
    import matplotlib as mpl

    before = mpl.rcParams["svg.fonttype"], mpl.rcParams["font.size"]
    # Run
    charts.figure_svg(charts.rounds_figure({"f": [(1, 0.9)]}, {}, title="t"))
    # Assert
    assert (mpl.rcParams["svg.fonttype"], mpl.rcParams["font.size"]) == before

