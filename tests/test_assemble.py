"""`fusionframes assemble`: join a keyframe run and an interpolation run into one loadable model folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model

from fusionframes import cli
from fusionframes.io.checkpoints import load_model_folder, write_model_folder


def _interpolation_run(tiny_model_dir: Path, root: Path) -> Path:
    """The same model with a different interpolation U-Net, as a parallel interpolation run would be."""
    components = load_model_folder(tiny_model_dir)
    with torch.no_grad():
        for p in components.interpolation_unet.parameters():
            p.add_(0.01)
        components.interpolation_null += 1.0
    components.vocabulary = frozenset({"zebra"})
    return write_model_folder(components, root / "interp")


@pytest.mark.slow
def test_assemble_takes_each_stage_from_its_run(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    interp = _interpolation_run(tiny_model_dir, tmp_path)
    out = tmp_path / "joined"
    sampling = json.dumps({"num_inference_steps": 7, "scheduler": "ddim", "fps": "medium"})
    args = ["assemble", "--keyframes", str(tiny_model_dir), "--interpolation", str(interp)]
    code = cli.main(
        [*args, "--out", str(out), "--name", "joined", "--half", "--sampling", sampling]
        + ["--description", "two runs joined"]
    )
    assert code == 0 and str(out) in capsys.readouterr().out

    joined, key, other = load_model_folder(out), load_model_folder(tiny_model_dir), load_model_folder(interp)
    assert joined.name == "joined"
    manifest = json.loads((out / "model_index.json").read_text())
    assert manifest["description"] == "two runs joined"
    counted = sum(p.numel() for m in joined.networks().values() for p in m.parameters())
    assert manifest["parameters"] > counted  # the networks plus the T5
    assert joined.config.sampling.num_inference_steps == 7 and joined.config.sampling.scheduler == "ddim"
    assert "zebra" in joined.vocabulary and key.vocabulary <= joined.vocabulary
    for mine, theirs in (
        (joined.keyframe_unet, key.keyframe_unet),
        (joined.interpolation_unet, other.interpolation_unet),
        (joined.movq, key.movq),
    ):
        for a, b in zip(mine.state_dict().values(), theirs.state_dict().values(), strict=True):
            assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)  # float16 storage
    assert torch.allclose(joined.interpolation_null, other.interpolation_null, atol=1e-2)
    assert (out / "text_encoder" / "config.json").is_file()
    size = sum(f.stat().st_size for f in (out / "keyframe_unet").iterdir())
    full = sum(f.stat().st_size for f in (Path(tiny_model_dir) / "keyframe_unet").iterdir())
    assert size < 0.7 * full


def test_assemble_refuses_runs_with_different_movq(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    stranger = make_tiny_model(tmp_path / "other", seed=5)
    args = ["assemble", "--keyframes", str(tiny_model_dir), "--interpolation", str(stranger)]
    code = cli.main([*args, "--out", str(tmp_path / "joined")])
    assert code == 2
    assert "MoVQ differs" in capsys.readouterr().err
    assert not (tmp_path / "joined").exists()


def test_assemble_bad_sampling_json(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    args = ["assemble", "--keyframes", str(tiny_model_dir), "--interpolation", str(tiny_model_dir)]
    assert cli.main([*args, "--out", str(tmp_path / "j"), "--sampling", "{steps: 3"]) == 2
    assert "sampling: not valid JSON" in capsys.readouterr().err
    assert cli.main([*args, "--out", str(tmp_path / "j"), "--sampling", '{"stepz": 3}']) == 2
    assert "stepz" in capsys.readouterr().err
