"""`fusionframes eval synthetic`: a JSON summary and contact sheet from real generations; errors first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusionframes import cli

FAST = ["--steps", "2", "--interpolation-steps", "2", "--device", "cpu", "--dtype", "float32"]


@pytest.mark.slow
def test_eval_synthetic_writes_summary_and_sheet(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "# comments and blank lines are skipped\n\n"
        "a red circle moving right on a gray background\n"
        "a dragon eating noodles\n"
        "a black circle shrinking on a white background\n"
    )
    out_json, sheet = tmp_path / "eval.json", tmp_path / "sheet.png"
    code = cli.main(
        ["eval", "synthetic", "--model", str(tiny_model_dir), "--prompts-file", str(prompts)]
        + ["--json", str(out_json), "--sheet", str(sheet), "--seed", "3", *FAST]
    )
    assert code == 0
    result = json.loads(out_json.read_text())
    assert result["unparsed"] == ["a dragon eating noodles"]
    rows = [r for r in result["rows"] if "scores" in r]
    assert [r["seed"] for r in rows] == [3, 5]  # seed + prompt index, unparsed prompts keep their index
    assert {r["split"] for r in rows} == {"training", "held_out"}
    assert result["overall"]["prompts"] == 2
    assert set(result["overall"]["accuracy"]) == {"colour", "shape", "motion", "background", "count", "all"}
    assert result["settings"]["fps"] == "medium" and result["settings"]["steps"] == 2
    image = np.asarray(Image.open(sheet))
    assert image.ndim == 3 and image.shape[0] > 64 and image.std() > 0
    printed = capsys.readouterr().out
    assert "training" in printed and "outside the grammar" in printed


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num", "-1"], "num: must be >= 0"),
        (["--json", "summary.txt"], "json: must end in .json"),
        (["--sheet", "sheet.jpg"], "sheet: must end in .png"),
        (["--prompts-file", "missing.txt"], "prompts-file: not found"),
        (["--fps", "ultra"], "fps"),
        (["--steps", "0"], "--steps: must be between 1 and 1000"),
    ],
)
def test_eval_synthetic_bad_options(
    extra, message, tiny_model_dir: Path, tmp_path: Path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["eval", "synthetic", "--model", str(tiny_model_dir), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_empty_prompts_file(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("# nothing\n\n")
    code = cli.main(["eval", "synthetic", "--model", str(tiny_model_dir), "--prompts-file", str(prompts)])
    assert code == 2
    assert "holds no prompts" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_directions_writes_a_paired_report(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "probe.json"
    code = cli.main(
        ["eval", "directions", "--model", str(tiny_model_dir), "--clips", "3", "--timesteps", "500,900"]
        + ["--json", str(out)]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["clips"] == 3 and set(report["timesteps"]) == {"500", "900"}
    for row in report["timesteps"].values():
        assert row["loss_true"] > 0 and row["loss_reversed"] > 0
        assert row["prefers_true"] in (0.0, 33.3, 66.7, 100.0)
    assert "prefers true" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--timesteps", "abc"], "timesteps: expected comma-separated integers"),
        (["--timesteps", "500,1000"], "timesteps: each must be in [0, 1000)"),
        (["--clips", "0"], "clips: must be >= 1"),
        (["--json", "probe.txt"], "json: must end in .json"),
    ],
)
def test_eval_directions_bad_options(
    extra, message, tiny_model_dir: Path, tmp_path: Path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval", "directions", "--model", str(tiny_model_dir), *extra]) == 2
    assert message in capsys.readouterr().err
