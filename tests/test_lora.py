"""LoRA adapters (peft): training changes only the adapter, files round-trip and peft reads them, scale 0
and unload give the base output exactly, merge matches the loaded adapter, bad input fails clearly, and
a two-process torchrun LoRA run stays rank-identical and resumes exactly."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusionframes.io.checkpoints import load_model_folder
from fusionframes.lora.files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST, read_adapter
from fusionframes.lora.layers import (
    LoraSpec,
    attach,
    base_state,
    lora_config,
    resolve_targets,
    weights_hash,
)
from fusionframes.lora.pipeline import (
    load_lora,
    loaded_adapters,
    merge_loras,
    parse_lora_argument,
    set_lora_scale,
    split_scale,
    unload_lora,
)
from fusionframes.training.config import config_from_dict

EXIT_WITHOUT_FINALIZING = "import os; sys.stdout.flush(); sys.stderr.flush(); os._exit(0)\n"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    from fusionframes.synthetic import write_shards

    out = tmp_path_factory.mktemp("lora-data") / "shapes"
    write_shards(out, 8, size=32, frames=17, seed=3, shard_size=8, new_colour_share=0.5)
    return out


def lora_cfg(model: Path, **overrides) -> dict:
    return {
        "stage": "keyframes",
        "init_from": str(model),
        "size": 32,
        "clip_frames": 17,
        "num_keyframes": 4,
        "keyframe_stride": 4,
        "batch_size": 2,
        "num_workers": 0,
        "warmup_steps": 1,
        "learning_rate": 1e-2,
        "checkpoint_every": 1000,
        "ema_decay": 0.5,
        "lora_rank": 4,
        "lora_targets": "all-linear",
        **overrides,
    }


def unet_inputs(unet: torch.nn.Module, seed: int = 0) -> tuple:
    """One keyframe U-Net call's inputs for the tiny model (4 frames of 8x8 latents)."""
    gen = torch.Generator().manual_seed(seed)
    frames = 4
    x = torch.randn(frames, 4, 8, 8, generator=gen)
    t = torch.full((frames,), 500.0)
    context = torch.randn(frames, 6, 16, generator=gen)
    mask = torch.ones(frames, 6, dtype=torch.bool)
    from fusionframes.pipelines.stages import temporal_positions

    return x, t, context, mask, temporal_positions(frames, x.device)


def call(unet: torch.nn.Module, inputs: tuple) -> torch.Tensor:
    x, t, context, mask, positions = inputs
    with torch.no_grad():
        return unet(x, t, context, mask, positions, num_frames=4)


def random_adapter(components, folder: Path, targets: str = "attention+temporal", seed: int = 1) -> Path:
    """An adapter with non-zero B (a trained adapter's, in effect) written as an adapter folder."""
    from fusionframes.lora.files import save_adapter

    unet = components.keyframe_unet
    base_hash = weights_hash(unet)
    attach(unet, lora_config(LoraSpec(4, 8.0), resolve_targets(unet, targets)), "tmp")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    save_adapter(unet, "tmp", folder, "keyframe_unet", components.name, base_hash)
    unload_lora(components)
    return folder


@pytest.fixture()
def model(tiny_model_dir):
    return load_model_folder(tiny_model_dir)


# --- layers and files ---------------------------------------------------------------------------


def test_presets_and_patterns_pick_layers(model) -> None:
    unet = model.keyframe_unet
    attention = resolve_targets(unet, "attention")
    both = resolve_targets(unet, "attention+temporal")
    assert attention and all(".attention." in n or n.startswith("attention.") for n in attention)
    assert set(attention) < set(both) and any("temporal_attention" in n for n in both)
    assert len(resolve_targets(unet, "all-linear")) > len(both)
    assert resolve_targets(unet, r"to_query$") == [
        n for n in resolve_targets(unet, "all-linear") if n.endswith("to_query")
    ]
    with pytest.raises(ValueError, match=r"lora_targets: 'nope' matches no layer.*attention\.to_query"):
        resolve_targets(unet, "nope")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        resolve_targets(unet, "to_(query")


@pytest.mark.slow
def test_scale_zero_and_unload_give_the_base_output_exactly(model, tmp_path) -> None:
    unet = model.keyframe_unet
    inputs = unet_inputs(unet)
    base = call(unet, inputs)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    types = {n: type(m) for n, m in unet.named_modules()}
    name = load_lora(model, random_adapter(model, tmp_path / "a"), scale=1.0)
    adapted = call(unet, inputs)
    assert not torch.allclose(adapted, base, atol=1e-4)
    set_lora_scale(model, 0.0)
    assert torch.equal(call(unet, inputs), base)
    set_lora_scale(model, 1.0, name)
    assert torch.equal(call(unet, inputs), adapted)
    unload_lora(model)
    assert loaded_adapters(model) == {}
    assert torch.equal(call(unet, inputs), base)
    assert {n: type(m) for n, m in unet.named_modules()} == types
    after = unet.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not hasattr(unet, "peft_config")


@pytest.mark.slow
def test_round_trip_two_adapters_and_peft_reads_the_folder(model, tiny_model_dir, tmp_path) -> None:
    a = random_adapter(model, tmp_path / "style", seed=1)
    b = random_adapter(model, tmp_path / "subject", targets="attention", seed=2)
    unet = model.keyframe_unet
    inputs = unet_inputs(unet)
    load_lora(model, a)
    only_a = call(unet, inputs)
    load_lora(model, b, scale=0.5)
    assert loaded_adapters(model) == {"style": "keyframe_unet", "subject": "keyframe_unet"}
    both = call(unet, inputs)
    assert not torch.allclose(both, only_a, atol=1e-5)
    unload_lora(model, "subject")
    # the same tensors and layers as with "style" alone (CPU matmuls may round by an ulp differently
    # when buffers land at other addresses, so the output is compared to float32 precision)
    assert torch.allclose(call(unet, inputs), only_a, rtol=0, atol=1e-5)
    # a fresh load of the same folder gives the same output; peft's own loader reads the folder too
    fresh = load_model_folder(tiny_model_dir)
    load_lora(fresh, a)
    assert torch.allclose(call(fresh.keyframe_unet, inputs), only_a, rtol=0, atol=1e-6)
    from peft import PeftModel

    plain = load_model_folder(tiny_model_dir).keyframe_unet
    peft_model = PeftModel.from_pretrained(plain, str(a))
    assert torch.allclose(call(peft_model.base_model.model, inputs), only_a, atol=1e-6)
    manifest = json.loads((a / MANIFEST).read_text())
    assert manifest["component"] == "keyframe_unet" and manifest["base_model"] == "tiny-test"
    assert manifest["base_hash"] == weights_hash(load_model_folder(tiny_model_dir).keyframe_unet)


def test_weights_hash_is_the_same_in_every_load_dtype(model) -> None:
    """A float16 folder loaded in float32, float16 or bfloat16 hashes the same; other weights do not."""
    import copy

    stored = copy.deepcopy(model.keyframe_unet).half().float()  # what loading a float16 folder gives
    expected = weights_hash(stored)
    assert weights_hash(copy.deepcopy(stored).half()) == expected
    assert weights_hash(copy.deepcopy(stored).bfloat16()) == expected
    with torch.no_grad():
        next(stored.parameters()).add_(0.5)
    assert weights_hash(stored) != expected


@pytest.mark.slow
def test_merge_matches_the_loaded_adapter(model, tiny_model_dir, tmp_path) -> None:
    adapter = random_adapter(model, tmp_path / "a")
    unet = model.keyframe_unet
    inputs = unet_inputs(unet)
    load_lora(model, adapter, scale=0.7)
    loaded = call(unet, inputs)
    from fusionframes.cli import main

    out = tmp_path / "merged"
    assert (
        main(["lora", "merge", "--model", str(tiny_model_dir), "--lora", f"{adapter}:0.7", "--out", str(out)])
        == 0
    )
    merged = load_model_folder(out)
    assert not any("lora" in k for k in merged.keyframe_unet.state_dict())
    assert (call(merged.keyframe_unet, inputs) - loaded).abs().max() <= 1e-5
    # merging in memory does the same
    assert merge_loras(model) == ["a"] and (call(unet, inputs) - loaded).abs().max() <= 1e-5
    # the merged model is another base: the adapter is refused on it
    with pytest.raises(ValueError, match="was trained on base model 'tiny-test'"):
        load_lora(merged, adapter)


@pytest.mark.slow
def test_bad_adapters_are_refused_with_nothing_attached(model, tiny_model_dir, tmp_path) -> None:
    good = random_adapter(model, tmp_path / "good")

    def broken(name: str, edit) -> Path:
        import shutil

        folder = tmp_path / name
        shutil.copytree(good, folder)
        edit(folder)
        return folder

    cases = [
        (broken("missing", lambda f: (f / ADAPTER_WEIGHTS).unlink()), "missing adapter_model.safetensors"),
        (
            broken("truncated", lambda f: (f / ADAPTER_WEIGHTS).write_bytes(b"\x08\x00")),
            "safetensors is corrupt",
        ),
        (broken("badjson", lambda f: (f / ADAPTER_CONFIG).write_text("{")), "adapter_config.json is corrupt"),
        (broken("nomanifest", lambda f: (f / MANIFEST).unlink()), "missing fusionframes_adapter.json"),
        (tmp_path / "absent", "adapter folder not found"),
    ]

    def other_component(f: Path) -> None:
        data = json.loads((f / MANIFEST).read_text())
        (f / MANIFEST).write_text(json.dumps({**data, "component": "interpolation_unet"}))

    cases.append(
        (
            broken("component", other_component),
            "adapts the interpolation_unet, not|another interpolation_unet architecture",
        )
    )
    for folder, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            load_lora(model, folder)
        assert loaded_adapters(model) == {}
    # another base model (same architecture, other weights)
    other = load_model_folder(tiny_model_dir)
    with torch.no_grad():
        next(other.keyframe_unet.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="was trained on base model 'tiny-test'.*other weights"):
        load_lora(other, good)
    # another architecture
    from fusionframes.components import build_components
    from fusionframes.config import small_config

    wide = build_components(
        small_config(
            channels=16,
            context_dim=16,
            num_frames=4,
            levels=2,
            groups=4,
            head_dim=8,
            movq_channels=8,
            movq_levels=3,
            size=64,
        ),
        model.text_encoder,
        name="wide",
    )
    with pytest.raises(
        ValueError, match="another keyframe_unet architecture|other weights|another architecture"
    ):
        load_lora(wide, good)
    assert loaded_adapters(wide) == {}
    for scale in (math.nan, math.inf):
        with pytest.raises(ValueError, match="scale: must be a finite number"):
            load_lora(model, good, scale=scale)
        with pytest.raises(ValueError, match="must be a finite number"):
            parse_lora_argument(f"{good}:{scale}")
    assert parse_lora_argument(f"{good}:0.25").scale == 0.25
    assert parse_lora_argument(str(good)).scale == 1.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora_rank": 0}, "lora_rank: must be a positive integer, got 0"),
        ({"lora_rank": -2}, "lora_rank: must be a positive integer"),
        ({"lora_rank": 2.5}, "lora_rank: expected int or null"),
        ({"lora_rank": True}, "lora_rank: expected int or null, got a boolean"),
        ({"lora_alpha": 0}, "lora_alpha: must be a finite number > 0"),
        ({"lora_alpha": -1.0}, "lora_alpha: must be a finite number > 0"),
        ({"lora_alpha": math.inf}, "lora_alpha: must be a finite number > 0"),
        ({"lora_targets": ""}, "lora_targets: must be a preset or a pattern"),
        ({"stage": "movq"}, "not the movq stage"),
        ({"init_from": None}, "give init_from"),
        ({"parallel": "fsdp"}, "use parallel: ddp"),
        ({"lora_rank": None, "lora_alpha": 4.0}, "lora_alpha: set only with lora_rank"),
    ],
)
def test_bad_lora_configs(overrides: dict, message: str, tmp_path) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_dict(lora_cfg(tmp_path, **overrides))


@pytest.mark.slow
def test_cli_rejects_bad_values_before_any_work(tiny_model_dir, clips, tmp_path, capsys) -> None:
    from fusionframes.cli import main

    config = tmp_path / "c.json"
    config.write_text(
        json.dumps({k: v for k, v in lora_cfg(tiny_model_dir).items() if not k.startswith("lora")})
    )
    common = [
        "train",
        "keyframes",
        "--config",
        str(config),
        "--data",
        str(clips),
        "--out",
        str(tmp_path / "r"),
    ]
    for extra, message in (
        (["--lora", "x"], "lora: must be an integer, got 'x'"),
        (["--lora", "0"], "lora_rank: must be a positive integer, got 0"),
        (["--lora", "4", "--lora-alpha", "nan"], "lora_alpha: must be a finite number > 0"),
        (["--lora", "4", "--lora-targets", "nothing_matches"], "matches no layer"),
    ):
        assert main(common + extra) != 0
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["generate", "a pink circle", "--lora", str(tmp_path / "absent")]) != 0
    assert "adapter folder not found" in capsys.readouterr().err


# --- training -------------------------------------------------------------------------------------


def run_steps(cfg, data: Path, run_dir: Path, steps: int):
    """A LoRA run's pieces, driven step by step: the objective, and its base weights before training."""
    from fusionframes.training.clips import load_clips
    from fusionframes.training.loop import train_step
    from fusionframes.training.optimisation import make_optimisation
    from fusionframes.training.setup import start_components
    from fusionframes.training.stages import StageSetup, build_stage
    from fusionframes.training.world import init_world

    world = init_world()
    run_dir.mkdir()
    clips = load_clips(data, cfg, world)
    components = start_components(cfg, clips, run_dir, world, None)
    stage = build_stage(cfg, components, clips, StageSetup(run_dir, world, False))
    frozen = {k: v.clone() for k, v in base_state(stage.objective).items()}
    opt = make_optimisation(stage.objective, cfg, world, None)
    losses = [train_step(stage, opt, step, world)[0] for step in range(steps)]
    return stage.objective, frozen, losses


@pytest.mark.slow
def test_lora_training_changes_only_the_adapter_and_lowers_the_loss(tiny_model_dir, clips, tmp_path) -> None:
    cfg = config_from_dict(lora_cfg(tiny_model_dir, batch_size=4, text_dropout=0.0))
    objective, frozen, losses = run_steps(cfg, clips, tmp_path / "run", 30)
    trained = [n for n, p in objective.named_parameters() if p.requires_grad]
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    after = base_state(objective)
    assert after.keys() == frozen.keys() and all(torch.equal(after[k], frozen[k]) for k in frozen)
    assert sum(losses[-8:]) < 0.95 * sum(losses[:8]), losses  # 30 steps on the tiny model: about -11%


@pytest.mark.slow
def test_lora_run_writes_an_adapter_that_reproduces_the_trained_network(
    tiny_model_dir, clips, tmp_path
) -> None:
    from fusionframes.training.loop import train
    from fusionframes.training.state import latest_checkpoint, read_checkpoint_state

    cfg = config_from_dict(
        lora_cfg(tiny_model_dir, max_steps=4, checkpoint_every=2, lora_targets="attention")
    )
    train(cfg, clips, tmp_path / "run", progress=False)
    adapter = tmp_path / "run" / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST]
    assert not (tmp_path / "run" / "model").exists()
    state = read_checkpoint_state(latest_checkpoint(tmp_path / "run"))
    assert state["objective"] and all(".lora_" in k for k in state["objective"])
    manifest = json.loads((adapter / MANIFEST).read_text())
    assert manifest["training"] == {"stage": "keyframes", "step": 4}
    assert manifest["trainable_parameters"] == manifest["parameters"] > 0
    read_adapter(adapter)
    model = load_model_folder(tiny_model_dir)
    inputs = unet_inputs(model.keyframe_unet)
    base = call(model.keyframe_unet, inputs)
    load_lora(model, adapter)
    assert not torch.equal(call(model.keyframe_unet, inputs), base)


@pytest.mark.slow
def test_lora_with_gradient_checkpointing_and_bfloat16(tiny_model_dir, clips, tmp_path) -> None:
    cfg = config_from_dict(
        lora_cfg(
            tiny_model_dir,
            gradient_checkpointing=True,
            precision="bfloat16",
            stage="interpolation",
            lora_targets="attention+temporal",
        )
    )
    objective, frozen, losses = run_steps(cfg, clips, tmp_path / "run", 3)
    assert all(math.isfinite(x) for x in losses)
    changed = [n for n, p in objective.named_parameters() if ".lora_B." in n and p.abs().sum() > 0]
    assert changed
    after = base_state(objective)
    assert all(torch.equal(after[k], frozen[k]) for k in frozen)


@pytest.mark.slow
def test_torchrun_lora_ranks_identical_and_resume_exact(tiny_model_dir, clips, tmp_path) -> None:
    """Two gloo ranks: the live adapter tensors agree bit for bit; a run cut at step 2 and resumed replays
    the uninterrupted run's losses (within 1e-5 relative, as the full-training resume tests). It did not
    while peft drew lora_A from the unseeded global generator: the cut run started from another adapter."""
    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys, json, torch, torch.distributed as dist\n"
        "from fusionframes.training.config import config_from_dict\n"
        "from fusionframes.training.loop import train\n"
        "from pathlib import Path\n"
        "base = json.loads(sys.argv[1]); data, root = sys.argv[2], sys.argv[3]\n"
        "whole = train(config_from_dict({**base, 'max_steps': 4}), data, root + '/whole', progress=False)\n"
        "cut = config_from_dict({**base, 'max_steps': 4, 'stop_after': 2})\n"
        "train(cut, data, root + '/cut', progress=False)\n"
        "resumed = train(config_from_dict({**base, 'max_steps': 4}), data, root + '/cut', resume=True,"
        " progress=False)\n"
        # the live adapter of a third, short run on each rank (checkpoints are written by rank 0 only)
        "from fusionframes.training.clips import load_clips\n"
        "from fusionframes.training.loop import train_step\n"
        "from fusionframes.training.optimisation import make_optimisation\n"
        "from fusionframes.training.setup import start_components\n"
        "from fusionframes.training.stages import StageSetup, build_stage\n"
        "from fusionframes.training.world import init_world\n"
        "cfg = config_from_dict({**base, 'max_steps': 3}); world = init_world(); run = Path(root + '/live')\n"
        "run.mkdir(exist_ok=True); clips = load_clips(data, cfg, world)\n"
        "parts = start_components(cfg, clips, run, world, None)\n"
        "stage = build_stage(cfg, parts, clips, StageSetup(run, world, False))\n"
        "opt = make_optimisation(stage.objective, cfg, world, None)\n"
        "for step in range(3): train_step(stage, opt, step, world)\n"
        "live = {n: p for n, p in stage.objective.named_parameters() if p.requires_grad}\n"
        "flat = torch.cat([v.detach().flatten().float() for _, v in sorted(live.items())])\n"
        "assert flat.abs().sum() > 0\n"
        "gathered = [torch.zeros_like(flat) for _ in range(2)]\n"
        "dist.all_gather(gathered, flat)\n"
        "assert torch.equal(gathered[0], gathered[1]), 'ranks differ'\n"
        "a = [l for _, l in whole['history'][2:]]\n"
        "b = [l for _, l in resumed['history']]\n"
        # the tolerance of the full-training resume tests (gloo's reduction order can move one ulp)
        "same = len(a) == len(b) == 2 and all(abs(x - y) <= 1e-5 * abs(x) for x, y in zip(a, b))\n"
        "print('RESUME_EXACT' if same else f'RESUME_DIFFERS {a} {b}')\n"
        "print('LORA_DDP_OK', dist.get_rank())\n"
        "dist.barrier(); dist.destroy_process_group()\n" + EXIT_WITHOUT_FINALIZING
    )
    cfg = lora_cfg(tiny_model_dir, checkpoint_every=2, batch_size=1)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    result = subprocess.run(
        [*command, str(script), json.dumps(cfg), str(clips), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("LORA_DDP_OK") == 2
    with open(tmp_path / "cut" / "loss.csv") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [0, 1, 2, 3]
    assert result.stdout.count("RESUME_EXACT") == 2, result.stdout[-2000:]


# --- pipelines and the synthetic world ------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_methods_and_scale_zero_video(tiny_model_dir, tmp_path) -> None:
    from fusionframes.pipelines.animation import AnimationPipeline
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    adapter = random_adapter(pipe.components, tmp_path / "a")

    def video():
        out = pipe(
            "a red circle",
            num_inference_steps=2,
            interpolation_steps=1,
            fps="low",
            seed=0,
            output_type="np",
            progress=False,
        )
        return torch.as_tensor(out.frames.copy())

    base = video()
    name = pipe.load_lora(adapter, scale=0.0)
    assert pipe.loras == {name: "keyframe_unet"}
    assert torch.equal(video(), base)
    pipe.set_lora_scale(1.0)
    assert not torch.equal(video(), base)
    pipe.unload_lora()
    assert torch.equal(video(), base) and pipe.loras == {}
    animation = AnimationPipeline(pipe)
    animation.load_lora(adapter)
    assert animation.loras == pipe.loras == {"a": "keyframe_unet"}
    animation.unload_lora("a")
    with pytest.raises(ValueError, match="no adapter named 'a'"):
        pipe.set_lora_scale(0.5, "a")


def test_new_colour_is_opt_in_and_scored() -> None:
    from fusionframes.evaluation.analysis import name_colour
    from fusionframes.synthetic import COLOURS, make_sample, parse_prompt

    for index in range(8):  # the default data (the built-in model's) is drawn exactly as before
        assert make_sample(0, index, 32, 5)[1] == make_sample(0, index, 32, 5, new_colour_share=0.0)[1]
        assert "pink" not in make_sample(0, index, 32, 5)[1]
    assert any("pink" in make_sample(0, i, 32, 5, new_colour_share=0.5)[1] for i in range(8))
    assert parse_prompt("a pink star moving right on a gray background")["objects"][0]["colour"] == "pink"
    import numpy as np

    assert name_colour(np.array(COLOURS["pink"], np.float32))[0] == "pink"
    with pytest.raises(ValueError, match=r"new_colour_share: must be a probability in \[0, 1\)"):
        make_sample(0, 0, 32, 5, new_colour_share=1.0)


def test_new_shape_is_opt_in_drawn_and_scored() -> None:
    from fusionframes.evaluation.analysis import analyse_clip
    from fusionframes.synthetic import ObjectSpec, Scene, make_sample, parse_prompt, render_clip

    for index in range(8):  # the default data (the built-in model's) is drawn exactly as before
        assert make_sample(0, index, 32, 5)[1] == make_sample(0, index, 32, 5, new_shape_share=0.0)[1]
        assert "oval" not in make_sample(0, index, 32, 5)[1]
    assert any("oval" in make_sample(0, i, 32, 5, new_shape_share=0.5)[1] for i in range(8))
    assert parse_prompt("two ovals, a red one rising and a blue one falling")["objects"][1]["shape"] == "oval"
    # the evaluator tells an oval from every built-in shape, and follows it turning
    for shape in ("circle", "square", "triangle", "star", "oval"):
        scene = Scene([ObjectSpec("red", shape, "rotating" if shape != "circle" else "still")], "gray")
        track = analyse_clip(render_clip(scene, 96, 9)).objects[0]
        assert track.shape == shape
        assert track.motion == ("still" if shape == "circle" else "rotating")
    with pytest.raises(ValueError, match=r"new_shape_share: must be a probability in \[0, 1\]"):
        make_sample(0, 0, 32, 5, new_shape_share=1.5)


@pytest.mark.parametrize(
    ("text", "want"),
    [("a/b", ("a/b", None)), ("a/b:0.5", ("a/b", "0.5")), ("c:d:2", ("c:d", "2")), (":3", (":3", None))],
)
def test_split_scale_takes_the_last_colon(text: str, want: tuple) -> None:
    assert split_scale(text) == want
