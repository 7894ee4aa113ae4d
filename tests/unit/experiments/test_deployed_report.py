"""What a deployed run's report.html says: figures as numbers, how each was computed, sizes, the run's facts.

Built from a small fake round entry and audit folder (no run): the report sections of
:mod:`fedsynth.experiments.deployed` rendered by :func:`fedsynth.experiments.run_writer.write_html`.
"""

from __future__ import annotations

import html as _html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from fedsynth.experiments.config import ExperimentConfig, parse_config


def _final(*, components: bool = True) -> dict[str, Any]:
    """The last round's metrics entry of a deployed run, as RunDirectory.record writes it from the sites' scores."""
    return {
        "round": 1, "csf": 0.76, "gsf": 0.75, "nndr": 0.87, "nndr_p5": 0.69,
        "components": {"column_fidelity": 0.946,
                       **({"csf_components": {"column_fidelity_clinical": 0.864},
                           "gsf_components": {"mutation_frequency_similarity": 0.797}} if components else {})},
        "scores": {
            "nndr": {"synthetic": {"mean": 0.87, "p5": 0.69}, "holdout": {"mean": 0.91, "p5": 0.59}},
            "dcr_share": 0.45, "exact_copies": 0.0, "exact_copies_holdout": 0.003,
            "site_scores": {"A": {"num_examples": 1597.0, "holdout_rows": 99.0, "csf": 0.766},
                            "B": {"num_examples": 266.0, "holdout_rows": 0.0, "csf": 0.761}},
            "scoring_left_out": {},
        },
    }


def _audit(folder: Path) -> Path:
    folder.mkdir()
    entries = [{"time": "2026-01-01T10:00:00+00:00", "site": "A", "run_id": "1", "message_type": "query.counts",
                "round": "counts-1", "error": False, "bytes": 1_600,
                "fields": {"counts": {"kind": "counts", "bytes": 1_600}}},
               {"time": "2026-01-01T10:00:05+00:00", "site": "A", "run_id": "1", "message_type": "evaluate.snapshot",
                "round": "score-001", "error": False, "bytes": 2_350_000,
                "fields": {"scores": {"kind": "metrics", "bytes": 2_350_000}}}]
    (folder / "A.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return folder


def _config(tmp_path: Path, strategy: dict[str, Any], generator: str = "bayesian_network") -> ExperimentConfig:
    return parse_config({"name": "t", "cohort": {"name": "mds-iwgpm"}, "generator": {"name": generator},
                         "strategy": strategy, "output": {"dir": str(tmp_path), "run_id": "run"}, "seed": 3})


def _page(tmp_path: Path, final: dict[str, Any], facts: Sequence[tuple[str, str]] = ()) -> str:
    from fedsynth.experiments.deployed import report_sections
    from fedsynth.experiments.run_writer import write_html

    sections = report_sections(final, [], _audit(tmp_path / "audit"))
    path = tmp_path / "report.html"
    write_html(path, [{"round": 1, "csf": 0.76, "gsf": 0.75, "nndr_p5": 0.69}], [], None, {}, sections,
               title="deployed", facts=facts, scored_at_sites=True)
    return _html.unescape(path.read_text())


def _row(page: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    match = re.search(r"<tr><td>" + re.escape(first_cell) + r"</td>(.*?)</tr>", page, re.DOTALL)
    assert match, first_cell
    return re.findall(r"<td[^>]*>(.*?)</td>", match.group(1), re.DOTALL)


def test_nndr_mean_is_a_number_with_its_holdout_baseline_beside_it(tmp_path) -> None:
    # Run
    page = _page(tmp_path, _final())
    # Assert: the synthetic mean (not the nndr dict) in the round column, the holdout mean beside it
    assert "{'synthetic'" not in page and "'holdout'" not in page
    assert _row(page, "nndr_mean")[-2:] == ["0.870", "0.910"]
    assert _row(page, "nndr_p5")[-2:] == ["0.690", "0.590"]
    assert _row(page, "exact_copies")[-2:] == ["0.000", "0.003"]
    assert _row(page, "csf")[-2:] == ["0.760", ""]  # no holdout baseline for CSF


def test_each_csf_and_gsf_component_the_sites_returned_has_its_row(tmp_path) -> None:
    # Run
    page = _page(tmp_path, _final())
    (tmp_path / "bare").mkdir()
    bare = _page(tmp_path / "bare", _final(components=False))
    # Assert: one row per component with its combined value; no wildcard row showing a dash
    assert "csf_component.* / gsf_component.*" not in page
    assert _row(page, "csf_component.column_fidelity_clinical")[-2] == "0.864"
    assert _row(page, "gsf_component.mutation_frequency_similarity")[-2] == "0.797"
    assert "csf_component.* / gsf_component.*" not in bare
    assert "components of CSF and GSF are not shown: no site returned any" in bare


def test_the_per_site_table_shows_whole_training_rows_under_a_plain_heading(tmp_path) -> None:
    # Run
    page = _page(tmp_path, _final())
    # Assert
    assert "num_examples" not in page and "<th>training rows</th>" in page and "<th>holdout rows</th>" in page
    assert _row(page, "A")[:3] == ["1597", "99", "0.766"]
    assert "1597.000" not in page


def test_the_audit_table_shows_sizes_in_kb_and_mb(tmp_path) -> None:
    from fedsynth.deployment.audit import format_bytes

    # Run
    page = _page(tmp_path, _final())
    # Assert: 1,600 + 2,350,000 bytes
    cells = re.findall(r"<td[^>]*>(.*?)</td>", page.split("What the coordinator received")[1], re.DOTALL)
    assert cells[:4] == ["A", "2", "0", "2.35 MB"]
    assert "counts: 1 fields, 1.6 kB; metrics: 1 fields, 2.35 MB" in cells[4]
    assert [format_bytes(n) for n in (0, 999, 1_000, 1_600, 999_499, 2_350_000, 1_200_000_000)] == \
        ["0 B", "999 B", "1 kB", "1.6 kB", "999 kB", "2.35 MB", "1.2 GB"]


def test_the_rounds_heading_says_the_sites_scored_and_mentions_no_reference_lines(tmp_path) -> None:
    # Run
    page = _page(tmp_path, _final())
    # Assert
    assert "fast path" not in page and "reference" not in page.split("<h2>")[0].lower()
    assert "each site scored the sample against its own rows" in page
    assert "combined, weighted by their row counts" in page


def test_the_header_says_whether_secure_aggregation_was_on_and_how_long_the_run_took(tmp_path) -> None:
    from fedsynth.experiments.run_writer import format_duration, run_facts

    # Setup: a deployed manifest (secure aggregation as the deployment recorded it)
    config = _config(tmp_path, {"name": "two_step_bn"})
    manifest = {"engine": "deployment", "started": "2026-01-01T10:00:00+00:00",
                "strategy": {"name": "two_step_bn", "rounds": 1, "secure_aggregation": True},
                "sites": [{"name": "A"}, {"name": "B"}]}
    # Run
    facts = run_facts(manifest, config, 161.4)
    page = _page(tmp_path, _final(), facts)
    # Assert
    assert "secure aggregation: on (the coordinator sees only sums over the sites)" in re.sub(r"</?b>", "", page)
    assert "wall time: 2 min 41 s" in re.sub(r"</?b>", "", page)
    assert "sites: A, B" in re.sub(r"</?b>", "", page)
    assert dict(run_facts({**manifest, "strategy": {"name": "two_step_bn"}}, config, 5.0))["secure aggregation"] == "off"
    assert [format_duration(s) for s in (4.25, 60.0, 161.4, 3_725.0)] == ["4.2 s", "1 min 00 s", "2 min 41 s",
                                                                         "1 h 02 min"]


def test_the_manifest_records_one_round_for_a_two_step_bn_and_the_configs_rounds_for_fedavg(tmp_path) -> None:
    from fedsynth.cohort.schema import TableSchema
    from fedsynth.experiments.run_writer import RunDirectory, ran_rounds

    # Setup
    bn = _config(tmp_path, {"name": "two_step_bn"})  # strategy.rounds keeps its default, which it does not use
    fedavg = _config(tmp_path, {"name": "fedavg", "rounds": 5, "local_epochs": 2}, generator="vae_bgm")
    run = RunDirectory("run", tmp_path / "run")
    schema = TableSchema((), (), "empty")
    # Run
    run.begin(bn, schema, {"config": {}}, {"strategy": {"name": "two_step_bn", "rounds": 3, "local_epochs": 5}},
              resume=False, expected_rounds=1)
    # Assert
    assert bn.strategy.rounds == 3
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (manifest["strategy"]["rounds"], manifest["strategy"]["local_epochs"]) == (1, None)
    assert ran_rounds(fedavg) == {"rounds": 5, "local_epochs": 2}


@pytest.mark.parametrize("references", [{}, {"centralized": {"csf": 0.9}}])
def test_a_simulated_rounds_page_mentions_reference_lines_only_when_there_are_some(tmp_path, references) -> None:
    from fedsynth.evaluation import render_rounds_html

    # Run
    page = render_rounds_html([{"round": 1, "csf": 0.5}], references, None, tmp_path / "r.html").read_text()
    # Assert
    assert "against the pooled training rows" in page and "fast path" not in page
    assert ("Each horizontal line is a reference: the same generator trained centralized" in page) == bool(references)
