"""The loopback federation's set-up that the slow tests and the deployment benchmark share: each site's folder."""

from __future__ import annotations

from pathlib import Path

from fedsynth.deployment.loopback import site_folders


def test_each_site_gets_its_own_folder_with_its_rows_and_its_holdout_beside_them(tmp_path: Path) -> None:
    # Setup: what `fedsynth partition` writes for two sites
    parts = tmp_path / "parts"
    parts.mkdir()
    for i in (1, 2):
        (parts / f"site-{i}.csv").write_text(f"x\n{i}\n")
        (parts / f"site-{i}.holdout.csv").write_text(f"x\n{10 * i}\n")

    # Run
    files = site_folders(parts, tmp_path, ["A", "B"])
    bare = site_folders(parts, tmp_path / "bare", [], holdouts=False)

    # Assert: site-1's files are A's, site-2's B's; the holdout sits where `site start` looks for it
    assert files == {"A": tmp_path / "hospital-A" / "rows.csv", "B": tmp_path / "hospital-B" / "rows.csv"}
    assert files["B"].read_text() == "x\n2\n"
    assert (tmp_path / "hospital-B" / "rows.holdout.csv").read_text() == "x\n20\n"
    assert not any(parts.iterdir()) and bare == {}
