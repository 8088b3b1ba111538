"""The command line: a real MP4 from `generate`, one-line errors before loading, convert, models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fusionframes import cli
from fusionframes.io.checkpoints import CheckpointError, OfficialFiles, load_model_folder, load_official
from fusionframes.io.video import read_metadata, read_video
from fusionframes.pipelines.text_to_video import TextToVideoPipeline


@pytest.mark.slow
def test_generate_writes_readable_mp4(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.mp4"
    code = cli.main(
        [
            "generate",
            "a red car drifting",
            "-o",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--steps",
            "2",
            "--interpolation-steps",
            "2",
            "--seed",
            "4",
            "--fps",
            "medium",
            "--width",
            "96",
            "--height",
            "64",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    frames, fps = read_video(out)
    assert frames.shape == (13, 64, 96, 3)
    assert fps == pytest.approx(4.0)
    meta = read_metadata(out)
    assert meta["prompt"] == "a red car drifting" and meta["seed"] == 4
    assert "seed 4" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", ""], "prompt: must be a non-empty string"),
        (["generate", "x", "--width", "70"], "width: 70 is not allowed; use a multiple of 8"),
        (["generate", "x", "--height", "4096"], "height: 4096 is not allowed"),
        (["generate", "x", "--fps", "ultra"], "fps: unknown 'ultra'"),
        (["generate", "x", "--steps", "0"], "--steps: must be between 1 and 1000, got 0"),
        (["generate", "x", "--steps", "100000000"], "--steps: must be between 1 and 1000"),
        (["generate", "x", "--interpolation-steps", "1000000"], "--interpolation-steps: must be between 1"),
        (["generate", "x", "--guidance", "nan"], "--guidance: must be a finite number"),
        (["generate", "x", "--guidance", "-2"], "--guidance: must be >= 0, got -2"),
        (["generate", "x", "--interpolation-guidance", "inf"], "--interpolation-guidance: must be a finite"),
        (["generate", "x", "--scheduler", "euler"], "scheduler: unknown 'euler'"),
        (["generate", "x", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["generate", "x", "--device", "quantum"], "device: unknown 'quantum'"),
        (["generate", "x", "--dtype", "int8"], "dtype: unknown 'int8'"),
        (["generate", "x", "-o", "video.avi2"], "output: "),
        (["generate", "x", "-o", "no/such/folder/out.mp4"], "no/such/folder"),
        (["generate", "x", "--model", "no-such-model"], "model: 'no-such-model' is neither"),
    ],
)
def test_bad_input_is_one_line_before_loading(
    args: list[str], message: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before validation")

    monkeypatch.setattr(TextToVideoPipeline, "from_pretrained", refuse)
    monkeypatch.chdir(tmp_path)
    if "--model" not in args:
        args = [*args, "--model", str(tiny_model_dir)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not list(tmp_path.glob("*.mp4"))


def _official_files(tiny_model_dir: Path, root: Path) -> OfficialFiles:
    """Write a tiny model in the released .pt layout (what `convert` reads)."""
    c = load_model_folder(tiny_model_dir)
    torch.save(
        {
            "unet": c.keyframe_unet.state_dict(),
            "null_embedding": c.keyframe_null,
            "projections": c.projection.state_dict(),
        },
        root / "kandinsky_video.pt",
    )
    torch.save(
        {"unet": c.interpolation_unet.state_dict(), "null_embedding": c.interpolation_null},
        root / "kandinsky_video_interpolation.pt",
    )
    torch.save(c.movq.state_dict(), root / "movq.pt")
    (root / "config.json").write_text(json.dumps(c.config.to_dict()))
    return OfficialFiles(
        root / "kandinsky_video.pt",
        root / "kandinsky_video_interpolation.pt",
        root / "movq.pt",
        tiny_model_dir / "text_encoder",
    )


@pytest.mark.slow
def test_convert_round_trip_identical_outputs(tiny_model_dir: Path, tmp_path: Path) -> None:
    files = _official_files(tiny_model_dir, tmp_path)
    out = tmp_path / "converted"
    code = cli.main(
        [
            "convert",
            "--keyframe-weights",
            str(files.keyframe),
            "--interpolation-weights",
            str(files.interpolation),
            "--movq-weights",
            str(files.movq),
            "--text-encoder",
            str(files.text_encoder),
            "--copy-text-encoder",
            "--config",
            str(tmp_path / "config.json"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert json.loads((out / "model_index.json").read_text())["format"] == "fusionframes"
    assert (out / "keyframe_unet" / "model.safetensors").is_file()
    official = TextToVideoPipeline(
        load_official(files, load_model_folder(tiny_model_dir).config), "cpu", "float32"
    )
    converted = TextToVideoPipeline.from_pretrained(out, device="cpu", dtype="float32")
    kwargs = {"seed": 2, "num_inference_steps": 2, "output_type": "pt", "progress": False}
    assert torch.equal(official("a red circle", **kwargs).frames, converted("a red circle", **kwargs).frames)


def test_truncated_and_mismatched_checkpoints(tiny_model_dir: Path, tmp_path: Path) -> None:
    files = _official_files(tiny_model_dir, tmp_path)
    config = load_model_folder(tiny_model_dir).config
    data = files.movq.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="movq weights: cannot read .*truncated"):
        load_official(OfficialFiles(files.keyframe, files.interpolation, truncated), config)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_official(OfficialFiles(empty, files.interpolation, files.movq), config)
    # Swapped slots: the interpolation file where the keyframe file belongs.
    with pytest.raises(CheckpointError, match="lacks key"):
        load_official(OfficialFiles(files.interpolation, files.interpolation, files.movq), config)
    state = torch.load(files.keyframe, weights_only=True)
    state["unet"]["extra.weight"] = torch.zeros(1)
    del state["unet"]["in_layer.weight"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(
        CheckpointError, match=r"1 missing key\(s\): in_layer.weight.*1 unexpected key\(s\): extra"
    ):
        load_official(OfficialFiles(tmp_path / "bad.pt", files.interpolation, files.movq), config)
    with pytest.raises(FileNotFoundError, match="file not found"):
        load_official(OfficialFiles(tmp_path / "missing.pt", files.interpolation, files.movq), config)


@pytest.mark.slow
def test_offline_hub_error_names_file_and_flag(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from fusionframes.io.checkpoints import resolve_official_files

    with pytest.raises(FileNotFoundError, match=r"weights/movq.pt .* pass a local path with --movq-weights"):
        resolve_official_files(keyframe=__file__, interpolation=__file__, cache_dir=tmp_path / "cache")


def test_models_lists_sources(capsys) -> None:
    assert cli.main(["models", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "kandinsky-video-1.0" in out and "huggingface.co/ai-forever/KandinskyVideo" in out
    assert "automatic precision" in out
