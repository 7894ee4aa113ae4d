"""Damaged model folders: ``load_generator`` and ``fedsynth sample`` name the missing or damaged file (exit 2)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
from fedsynth.errors import ValidationError
from fedsynth.generators import load_generator, make_generator

runner = CliRunner()

SCHEMA = TableSchema(
    (
        ColumnSpec("AGE", ColumnKind.CONTINUOUS),
        ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
        ColumnSpec("G1", ColumnKind.BINARY),
    )
)


def _frame(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return SCHEMA.coerce(pd.DataFrame({
        "AGE": rng.normal(65, 10, n), "SEX": rng.choice(["F", "M"], n), "G1": (rng.random(n) < 0.3).astype(float),
    }))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A saved Bayesian network (JSON files only) and a saved VAE-BGM (JSON and .npz)."""
    root = tmp_path_factory.mktemp("models")
    make_generator("bayesian_network", SCHEMA, max_indegree=1).fit(_frame()).save(root / "bn")
    vae = make_generator("vae_bgm", SCHEMA, epochs=1, hidden_dims=[4], latent_dim=2, n_components=2, device="cpu")
    vae.fit(_frame()).save(root / "vae")
    return {"bayesian_network": root / "bn", "vae_bgm": root / "vae"}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _remove(path: Path) -> None:
    path.unlink()


# (model, file, damage, what the message must say about that file)
DAMAGE: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("bayesian_network", "generator.json", _remove, "generator.json: is missing"),
    ("bayesian_network", "generator.json", _truncate, "generator.json: is not valid JSON at line"),
    ("bayesian_network", "bayesian_network.json", _remove, "bayesian_network.json: is missing"),
    ("bayesian_network", "bayesian_network.json", _truncate, "bayesian_network.json: is not valid JSON"),
    ("vae_bgm", "vae_weights.npz", _remove, "vae_weights.npz: is missing"),
    ("vae_bgm", "vae_weights.npz", _truncate, "vae_weights.npz: is not a readable .npz archive (truncated or damaged)"),
    ("vae_bgm", "vae_bgm.json", _truncate, "vae_bgm.json: is not valid JSON"),
]


def _damaged_copy(source: Path, target: Path, file: str, damage: Callable[[Path], None]) -> Path:
    shutil.copytree(source, target)
    damage(target / file)
    return target


@pytest.mark.parametrize(("model", "file", "damage", "expected"), DAMAGE,
                         ids=[f"{m}-{f}-{d.__name__.strip('_')}" for m, f, d, _ in DAMAGE])
def test_sample_on_a_damaged_model_folder_exits_2_naming_the_file(
    saved: dict[str, Path], tmp_path: Path, model: str, file: str, damage: Callable[[Path], None], expected: str
) -> None:
    # Setup
    folder = _damaged_copy(saved[model], tmp_path / "model", file, damage)

    # Run
    result = runner.invoke(app, ["sample", str(folder), "--n", "5", "--out", str(tmp_path / "rows.csv")])

    # Assert: one clean message that names the file and says how to fix it; no traceback, no output file
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert f"The model folder {folder} has 1 problem" in text
    assert expected in text
    assert "fix: write the model again" in text
    assert "Traceback" not in result.output
    assert not (tmp_path / "rows.csv").exists()


def test_load_generator_lists_every_missing_file_at_once(saved: dict[str, Path], tmp_path: Path) -> None:
    # Setup
    folder = tmp_path / "model"
    shutil.copytree(saved["vae_bgm"], folder)
    (folder / "vae_weights.npz").unlink()
    (folder / "vae_bgm.json").unlink()

    # Run
    with pytest.raises(ValidationError) as err:
        load_generator(folder)

    # Assert
    assert [p.where for p in err.value.problems] == ["vae_weights.npz", "vae_bgm.json"]


def test_generator_json_without_its_keys_is_reported(saved: dict[str, Path], tmp_path: Path) -> None:
    # Setup: valid JSON, but not a model's description
    folder = tmp_path / "model"
    shutil.copytree(saved["bayesian_network"], folder)
    (folder / "generator.json").write_text('{"generator": "bayesian_network"}')

    # Run
    with pytest.raises(ValidationError) as err:
        load_generator(folder)

    # Assert
    assert [str(p).split(";")[0] for p in err.value.problems] == [
        "generator.json: lacks the dict 'params'", "generator.json: lacks the dict 'schema'",
        "generator.json: lacks the dict 'domain'",
    ]


def test_a_folder_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="folder: does not exist or is not a folder"):
        load_generator(tmp_path / "nowhere")


def test_an_intact_folder_still_loads_and_samples(saved: dict[str, Path]) -> None:
    # Control: the same folders undamaged load and sample
    for folder in saved.values():
        assert len(load_generator(folder).sample(5, random_state=0)) == 5
