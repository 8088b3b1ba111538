"""The shipped built-in model: present, small, self-describing, and the README's quick start works offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusionframes import cli
from fusionframes.io.checkpoints import BUILTIN_DIR, MANIFEST, load_model_folder
from fusionframes.io.video import read_video
from fusionframes.synthetic import BACKGROUNDS, PALETTE, SHAPES


def test_builtin_folder_is_complete_and_small() -> None:
    manifest = json.loads((BUILTIN_DIR / MANIFEST).read_text())
    size = sum(f.stat().st_size for f in BUILTIN_DIR.rglob("*") if f.is_file())
    # 1.0 parts about 31 MiB; the 1.1 parts (image-to-video U-Net, temporal decoder) about 15 MiB more
    assert size <= 48 * 2**20
    words = set(manifest["vocabulary"])
    assert set(PALETTE) | set(BACKGROUNDS) | set(SHAPES) <= words
    assert manifest["parameters"] > 1_000_000 and manifest["description"]
    model = load_model_folder(BUILTIN_DIR)
    sampling = model.config.sampling
    assert min(sampling.width, sampling.height) >= 128 and model.config.keyframe_unet.num_frames >= 8
    # keyframe sampling starts from the layout prior's output (docs/training.md, "Layout prior")
    assert model.layout_prior is not None and 0.0 < sampling.layout_prior_strength < 1.0


@pytest.mark.slow
def test_quick_start_command_writes_the_video(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code = cli.main(["generate", "a red circle moving right on a gray background", "-o", "out.mp4"])
    assert code == 0
    frames, fps = read_video(tmp_path / "out.mp4")
    assert fps == 8.0
    assert frames.shape[0] == 29 and frames.shape[1:3] == (128, 128)
    assert "wrote out.mp4" in capsys.readouterr().out
    assert frames.std() > 10  # not a blank or constant video (quality is the evaluator's job)


def test_unknown_words_warn_once() -> None:
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained()
    with pytest.warns(UserWarning, match="dragon") as record:
        assert pipe.warn_unknown_words("a red dragon moving right") == {"dragon"}
        assert pipe.warn_unknown_words("a red dragon moving left") == {"dragon"}
    assert len([w for w in record if "dragon" in str(w.message)]) == 1


def test_models_lists_the_builtin_vocabulary(capsys) -> None:
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "builtin" in out and "knows" in out and "triangle" in out and "MiB" in out
