"""Training as a hostile user drives it (issue 28): odd encoder widths, damaged or changed resumes, bad
input that must be one line naming the option, and what a run leaves behind."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
import torch
from test_training import BASE, make_clips

from fusionframes.io.checkpoints import load_model_folder
from fusionframes.training.config import config_from_dict, load_train_config
from fusionframes.training.loop import train


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return make_clips(tmp_path_factory.mktemp("clips"), count=6)


@pytest.fixture(scope="module")
def wide_t5_keyframes(clips, tmp_path_factory) -> Path:
    """A movq run whose small T5 is 32 wide (the U-Nets' context is 16) and whose preset samples at 128 px,
    then a keyframe run from it at 64 px with 3 keyframes (the preset: 4)."""
    root = tmp_path_factory.mktemp("wide")
    t5 = {"vocab_size": 40, "d_model": 32, "num_layers": 1, "num_heads": 2, "d_ff": 32}
    overrides = {**BASE["model_overrides"], "size": 128}
    movq = {
        **BASE,
        "stage": "movq",
        "size": 64,
        "max_steps": 1,
        "new_text_encoder": t5,
        "model_overrides": overrides,
    }
    train(config_from_dict(movq), clips, root / "movq", progress=False)
    keyframes = {
        **BASE,
        "stage": "keyframes",
        "size": 64,
        "max_steps": 2,
        "num_keyframes": 3,
        "init_from": str(root / "movq" / "model"),
    }
    train(config_from_dict(keyframes), clips, root / "keyframes", progress=False)
    return root


@pytest.mark.slow
def test_a_small_t5_of_another_width_trains_keyframes_and_generates(wide_t5_keyframes: Path) -> None:
    """Issue 28.3: the text projection takes the encoder's real width (it was fixed at context_dim)."""
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    assert load_model_folder(wide_t5_keyframes / "movq" / "model").config.text.encoder_dim == 32
    model = load_model_folder(wide_t5_keyframes / "keyframes" / "model")
    assert model.config.text.encoder_dim == 32 and model.projection.t5[0].weight.shape[1] == 32
    pipe = TextToVideoPipeline(model, device="cpu", dtype="float32")
    video = pipe(
        "a red square moving left", fps="low", num_inference_steps=2, seed=0, output_type="pt", progress=False
    )
    assert video.frames.shape[-2:] == (64, 64) and torch.isfinite(video.frames).all()


def test_a_model_folder_whose_encoder_disagrees_with_its_projection_is_refused(
    wide_t5_keyframes: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(wide_t5_keyframes / "movq" / "model", folder)
    config = json.loads((folder / "text_encoder" / "config.json").read_text())
    config["d_model"] = 48
    (folder / "text_encoder" / "config.json").write_text(json.dumps(config))
    from fusionframes.training.setup import check_encoder_width

    with pytest.raises(ValueError, match=r"text.encoder_dim=32 but its text encoder is 48 wide \(d_model\)"):
        check_encoder_width(load_model_folder(folder), folder)


@pytest.mark.slow
def test_exported_sampling_defaults_are_the_run_size_and_keyframe_count(wide_t5_keyframes: Path) -> None:
    """Issue 28.13: a 64 px, 3-keyframe run recorded the preset's 128 px and 4 keyframes."""
    config = load_model_folder(wide_t5_keyframes / "keyframes" / "model").config
    assert (config.sampling.width, config.sampling.height) == (64, 64)
    assert config.keyframe_unet.num_frames == 3
    movq = load_model_folder(wide_t5_keyframes / "movq" / "model").config
    assert (movq.sampling.width, movq.sampling.height) == (64, 64)


MOVQ = {**BASE, "stage": "movq", "checkpoint_every": 1, "keep_checkpoints": 2}


@pytest.mark.slow
def test_resume_falls_back_from_a_truncated_newest_checkpoint(clips, tmp_path, caplog) -> None:
    """Issue 28.7: a complete-marked checkpoint with a truncated optimizer.safetensors."""
    train(config_from_dict({**MOVQ, "max_steps": 2}), clips, tmp_path, progress=False)
    bad = tmp_path / "checkpoints" / "step-00000002" / "state" / "optimizer.safetensors"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="fusionframes.training.resume"):
        summary = train(
            config_from_dict({**MOVQ, "max_steps": 3}), clips, tmp_path, resume=True, progress=False
        )
    text = caplog.text
    assert str(bad) in text and "falling back to the previous complete checkpoint" in text
    assert "step-00000001" in text
    assert [step for step, _ in summary["history"]] == [1, 2]  # replayed from step 1
    from fusionframes.training.state import read_checkpoint_state

    assert read_checkpoint_state(tmp_path / "checkpoints" / "step-00000003")["progress"]["step"] == 3


@pytest.mark.slow
def test_resume_with_nothing_readable_names_the_files(clips, tmp_path) -> None:
    train(config_from_dict({**MOVQ, "max_steps": 1}), clips, tmp_path, progress=False)
    bad = tmp_path / "checkpoints" / "step-00000001" / "state" / "ema.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match=r"resume: no readable checkpoint .*ema\.safetensors: unreadable"):
        train(config_from_dict({**MOVQ, "max_steps": 2}), clips, tmp_path, resume=True, progress=False)


@pytest.mark.slow
def test_resume_refuses_changed_keys_that_break_it_and_warns_for_the_others(clips, tmp_path, caplog) -> None:
    """Issue 28.7: batch_size 4 -> 3 was accepted silently."""
    train(config_from_dict({**MOVQ, "max_steps": 1}), clips, tmp_path, progress=False)
    for change, shown in (
        ({"batch_size": 3}, "batch_size 4 -> 3"),
        ({"learning_rate": 1e-3}, "learning_rate"),
    ):
        with pytest.raises(ValueError, match=f"resume: the config changed since the checkpoint \\({shown}"):
            train(
                config_from_dict({**MOVQ, "max_steps": 2, **change}),
                clips,
                tmp_path,
                resume=True,
                progress=False,
            )
    with caplog.at_level(logging.WARNING, logger="fusionframes.training.resume"):
        cfg = config_from_dict({**MOVQ, "max_steps": 2, "checkpoint_every": 5})
        summary = train(cfg, clips, tmp_path, resume=True, progress=False)
    assert "checkpoint_every changed 1 -> 5 (accepted" in caplog.text
    assert "max_steps changed 1 -> 2 (accepted: the learning-rate schedule" in caplog.text
    assert [step for step, _ in summary["history"]] == [1]


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write to (root ignores permission bits: a read-only mount then)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    for candidate in (Path("/proc/sys"), Path("/sys/fs")):
        if candidate.is_dir() and not os.access(candidate, os.W_OK):
            return candidate
    pytest.skip("running as root with no read-only mount to write into")


def run_cli(args: list[str], capsys) -> str:
    from fusionframes import cli

    assert cli.main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.replace("\r", "\n").splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err  # one line, no traceback (progress bars aside)
    return errors[0]


def test_data_synth_bad_outputs_are_one_line_errors(tmp_path, capsys) -> None:
    """Issue 28.8: read-only --out, --out an existing file, --size 100000 (MemoryError, empty folder)."""
    synth = ["data", "synth", "--videos", "2", "--frames", "4"]
    target = read_only_folder(tmp_path) / "shards"
    assert "out: cannot write to" in run_cli([*synth, "--out", str(target)], capsys)
    (tmp_path / "file").write_text("x")
    assert "out: " in run_cli([*synth, "--out", str(tmp_path / "file")], capsys)
    message = run_cli([*synth, "--out", str(tmp_path / "big"), "--size", "100000"], capsys)
    assert "size: must be an even int in [32, 1024]" in message
    assert not (tmp_path / "big").exists()


@pytest.fixture()
def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "malformed.yaml").write_text("stage: movq\nmax_steps: [1\n")
    (tmp_path / "python.yaml").write_text('max_steps: !!python/object/apply:os.system ["echo pwned"]\n')
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for i in range(3):
        (corrupt / f"c{i}.mp4").write_bytes(os.urandom(2000))
    (corrupt / "captions.csv").write_text("video,caption\nc0.mp4,a\nc1.mp4,b\nc2.mp4,c\n")
    return {"corrupt": corrupt, "malformed": tmp_path / "malformed.yaml", "python": tmp_path / "python.yaml"}


@pytest.mark.parametrize(
    ("case", "config", "expected"),
    [
        ("read-only out", {}, "out: cannot write to"),
        ("malformed", None, "is not valid YAML (line 3)"),
        ("python", None, "Python object tags (!!python/...) are not allowed"),
        ("corrupt", {}, "data: no usable clips in"),
        ("override", {"model_overrides": {"chanels": 8}}, "model_overrides: unknown key(s) ['chanels']"),
        ("vocab", {"new_text_encoder": {"vocab_size": 0}}, "new_text_encoder.vocab_size: must be a positive"),
        ("d_ff", {"new_text_encoder": {"d_ff": -5}}, "new_text_encoder.d_ff: must be a positive integer"),
        (
            "layers",
            {"new_text_encoder": {"num_layers": 0}},
            "new_text_encoder.num_layers: must be a positive",
        ),
    ],
)
def test_train_bad_input_is_a_one_line_error(
    case, config, expected, clips, bad_inputs, tmp_path, capsys
) -> None:
    """Issue 28.8: each of these gave a traceback (or, for the text-encoder sizes, was accepted)."""
    import json

    if config is None:
        path = bad_inputs[case]
    else:
        path = tmp_path / "config.json"
        path.write_text(json.dumps({**BASE, "stage": "movq", "max_steps": 1, **config}))
    data = bad_inputs["corrupt"] if case == "corrupt" else clips
    out = read_only_folder(tmp_path) / "run" if case == "read-only out" else tmp_path / "run"
    message = run_cli(
        ["train", "movq", "--config", str(path), "--data", str(data), "--out", str(out)], capsys
    )
    assert expected in message
    assert not (tmp_path / "run").exists()  # issue 28.13: a failed run leaves no folder behind


def test_a_config_for_another_stage_is_refused(tmp_path) -> None:
    """Issue 28.13: the command's stage silently replaced the config's."""
    path = tmp_path / "movq.yaml"
    path.write_text("stage: movq\nmax_steps: 3\n")
    with pytest.raises(
        ValueError, match="stage: the config .* is for stage 'movq', but the command trains 'keyframes'"
    ):
        load_train_config(path, stage="keyframes")
    assert load_train_config(path, stage="movq").max_steps == 3
    (tmp_path / "any.yaml").write_text("max_steps: 3\n")
    assert load_train_config(tmp_path / "any.yaml", stage="keyframes").stage == "keyframes"


def test_a_failed_run_in_an_existing_folder_leaves_no_config(clips, tmp_path) -> None:
    """Issue 28.13: a failure before the first checkpoint left a run folder with only train_config.json."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    short = make_clips(tmp_path / "short", count=2, frames=5)
    with pytest.raises(ValueError, match=r"2 clip\(s\) are shorter than clip_frames=17"):
        train(config_from_dict({**BASE, "stage": "movq", "max_steps": 1}), short, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_synth_shards_get_the_usual_file_mode(tmp_path) -> None:
    """Issue 28.13: temporary files were renamed into place with mkstemp's 0600."""
    from fusionframes.synthetic import write_shards

    umask = os.umask(0o022)
    try:
        write_shards(tmp_path / "shards", 2, size=32, frames=3, shard_size=1)
    finally:
        os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "shards").iterdir()}
    assert modes == {"manifest.json": 0o644, "shard-000000.tar": 0o644, "shard-000001.tar": 0o644}


def test_generate_refuses_a_folder_whose_t5_is_wider_than_its_projection(tmp_path) -> None:
    """Issue 28.3, generation side: folders trained before the fix (T5 32 wide, text.encoder_dim 64)
    failed at the first prompt with `mat1 and mat2 shapes cannot be multiplied`."""
    from conftest import CAPTIONS, tiny_config

    from fusionframes.components import build_components
    from fusionframes.io.checkpoints import write_model_folder
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline
    from fusionframes.text.tokenizer import make_text_encoder_folder

    t5 = make_text_encoder_folder(CAPTIONS * 4, tmp_path / "t5", vocab_size=60, d_model=24, num_layers=1)
    config = tiny_config()
    assert config.text.encoder_dim == 16
    folder = write_model_folder(build_components(config, t5, name="mismatched"), tmp_path / "model", t5)
    pipe = TextToVideoPipeline.from_pretrained(folder, device="cpu", dtype="float32")
    with pytest.raises(ValueError, match=r"outputs 24 features \(d_model\) but the text projection takes 16"):
        pipe("a red circle", fps="low", num_inference_steps=2, seed=0, progress=False)
