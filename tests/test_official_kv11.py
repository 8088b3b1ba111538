"""Loading the Kandinsky Video 1.1 release layout: configs.json, strict keys, conversion into a model
folder, and the Hub errors (tiny random networks in the official file layout; no downloads)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fusionframes import cli
from fusionframes.components import build_components
from fusionframes.io.checkpoints import CheckpointError, load_model, load_model_folder, model_config_for
from fusionframes.io.official_kv11 import FILES, ReleaseFiles, load_release, model_config

UNET = {
    "model_channels": 8,
    "init_channels": 8,
    "time_embed_dim": 16,
    "context_dim": 16,
    "groups": 4,
    "head_dim": 8,
    "expansion_ratio": 2,
    "compression_ratio": 2,
    "dim_mult": [1, 2],
    "num_blocks": [2, 2],
    "add_cross_attention": [False, True],
    "add_self_attention": [False, True],
}
MOVQ = {
    "ch": 32,
    "ch_mult": [1, 1],
    "num_res_blocks": 1,
    "attn_resolutions": [8],
    "resolution": 16,
    "z_channels": 4,
    "in_channels": 3,
    "out_ch": 3,
    "double_z": False,
    "dropout": 0.0,
}
CONFIGS = {
    "t2v": {
        "configs": {
            **UNET,
            "num_channels": 9,
            "out_channels": 4,
            "noise_augmentation": True,
            "motion_score": True,
        }
    },
    "interpolation": {"configs": {**UNET, "num_channels": 20, "out_channels": 12}},
    "image_movq": {"configs": MOVQ},
    "video_movq": {"configs": {**MOVQ, "temporal": True, "temporal_attention_block": True}},
    "text_encoder": {"weights_path": "google/flan-ul2", "tokens_length": 16, "context_dim": 16},
}


def write_release(root: Path, configs: dict = CONFIGS) -> Path:
    """A tiny 1.1 release in the hub's file layout (weights random, blends non-zero)."""
    root.mkdir(parents=True, exist_ok=True)
    config = model_config(configs)
    config = replace(config, text=replace(config.text, encoder_dim=24))  # T5 width 24
    torch.manual_seed(0)
    c = build_components(config, "unused")
    with torch.no_grad():
        for module in c.networks().values():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    torch.save({"unet": c.keyframe_unet.state_dict(), "null_embedding": c.keyframe_null}, root / FILES["t2v"])
    torch.save(
        {"unet": c.interpolation_unet.state_dict(), "null_embedding": c.interpolation_null},
        root / FILES["interpolation"],
    )
    torch.save(c.movq.state_dict(), root / FILES["movq"])
    torch.save(c.video_movq.state_dict(), root / FILES["video_movq"])

    def bare(projection) -> dict:
        return {k.removeprefix("t5."): v for k, v in projection.state_dict().items()}

    torch.save(
        {"projection_base": bare(c.projection), "projection_interpolation": bare(c.interpolation_projection)},
        root / FILES["t5_projections"],
    )
    (root / "configs.json").write_text(json.dumps(configs))
    return root


def test_release_loads_strictly_and_converts_to_a_model_folder(tmp_path: Path) -> None:
    release = write_release(tmp_path / "release")
    loaded = load_release(ReleaseFiles.from_folder(release, "some/t5"))
    assert loaded.config.text.encoder_dim == 24  # read from the projection file
    assert loaded.config.keyframe_unet.num_channels == 9 and loaded.config.video_movq.temporal
    t2v = torch.load(release / "t2v.pt", weights_only=True)
    assert all(torch.equal(v, t2v["unet"][k]) for k, v in loaded.keyframe_unet.state_dict().items())
    assert torch.equal(loaded.keyframe_null, t2v["null_embedding"])

    out = tmp_path / "converted"
    argv = ["convert", "--release", "1.1", "--weights-dir", str(release), "--text-encoder", "some/t5"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    for part in ("keyframe_unet", "interpolation_unet", "movq", "video_movq", "text_projection"):
        assert (out / part / "model.safetensors").is_file() and (out / part / "config.json").is_file()
    assert (out / "interpolation_text_projection" / "model.safetensors").is_file()
    folder = load_model_folder(out)
    assert folder.config == loaded.config
    for name, module in loaded.networks().items():
        theirs = folder.networks()[name].state_dict()
        assert all(torch.equal(v, theirs[k]) for k, v in module.state_dict().items()), name
    latents = torch.randn(5, 4, 4, 4)
    with torch.no_grad():
        assert torch.equal(folder.video_movq.decode(latents), loaded.video_movq.decode(latents))


def test_mismatched_release_files_fail_naming_the_file(tmp_path: Path) -> None:
    release = write_release(tmp_path / "release")
    state = torch.load(release / "video_movq.pt", weights_only=True)
    del state["decoder.mid.temporal_attn_1.q.weight"]
    torch.save(state, release / "video_movq.pt")
    with pytest.raises(
        CheckpointError, match=r"video_movq weights: .*missing key\(s\): decoder.mid.temporal_attn_1"
    ):
        load_release(ReleaseFiles.from_folder(release))
    torch.save({"unet": {}}, release / "interpolation.pt")
    with pytest.raises(CheckpointError, match="interpolation weights: .* lacks key"):
        load_release(ReleaseFiles.from_folder(release))
    (release / "t2v.pt").unlink()
    with pytest.raises(FileNotFoundError, match="t2v.pt"):
        ReleaseFiles.from_folder(release)


def test_configs_json_switches_we_do_not_build_are_refused(tmp_path: Path) -> None:
    configs = json.loads(json.dumps(CONFIGS))
    configs["interpolation"]["configs"]["time_downsample"] = [True, False]
    with pytest.raises(CheckpointError, match="interpolation.time_downsample"):
        model_config(configs)
    configs = json.loads(json.dumps(CONFIGS))
    configs["video_movq"]["configs"]["temporal_blocks"] = True
    with pytest.raises(CheckpointError, match="video_movq.temporal_blocks"):
        model_config(configs)


@pytest.mark.slow
def test_hub_release_offline_error_and_preset_fallback(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # Without a cached configs.json the sizes are the preset's (the released ones).
    config = model_config_for("kandinsky-video-1.1")
    assert config.keyframe_unet.motion_score and config.video_movq.temporal_attention_block
    with pytest.raises(FileNotFoundError, match=r"ai-forever/KandinskyVideo_1_1/t2v.pt .*--model DIR"):
        load_model("kandinsky-video-1.1", cache_dir=tmp_path / "cache")


def test_convert_refuses_mixed_release_options(tmp_path: Path, capsys) -> None:
    code = cli.main(["convert", "--release", "1.1", "--movq-weights", "x.pt", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "movq-weights" in capsys.readouterr().err
