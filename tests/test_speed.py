"""Speed and memory options: offload, compile, channels-last decoding, and the generate benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusionframes import TextToVideoPipeline, cli
from fusionframes.io.checkpoints import load_model_folder
from fusionframes.pipelines import offload
from fusionframes.pipelines.acceleration import memory_format_of, validate_compile

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
RUN = {
    "prompt": "a red circle moving right on a gray background",
    "num_inference_steps": 2,
    "interpolation_steps": 2,
    "fps": "medium",
    "seed": 3,
    "output_type": "pt",
    "progress": False,
}


def make_pipe(model_dir: Path, **kwargs) -> TextToVideoPipeline:
    return TextToVideoPipeline(load_model_folder(model_dir), device="cpu", dtype="float32", **kwargs)


# -- offload ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, message",
    [
        ("bogus", "offload: unknown 'bogus'; allowed: none, model, sequential"),
        ("model", "offload: 'model' keeps weights in CPU memory"),
        ("sequential", "use --offload none"),
    ],
)
def test_offload_is_an_error_on_cpu(mode: str, message: str) -> None:
    assert offload.validate_offload(None, CPU) == "none"
    with pytest.raises(ValueError, match=message):
        offload.validate_offload(mode, CPU)


def test_offload_fails_before_loading(tiny_model_dir: Path, monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before validation")

    monkeypatch.setattr("fusionframes.io.checkpoints.load_model", refuse)
    with pytest.raises(ValueError, match="offload: 'model'"):
        TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", offload="model")
    with pytest.raises(ValueError, match="compile: unknown 'fast'"):
        TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", compile="fast")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--offload", "model", "--device", "cpu"], "offload: 'model' keeps weights in CPU memory"),
        (["--offload", "disk"], "offload: unknown 'disk'"),
        (["--compile", "max"], "compile: unknown 'max'"),
    ],
)
def test_cli_offload_and_compile_errors_are_one_line(
    args: list[str], message: str, tiny_model_dir: Path, monkeypatch, capsys
) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before validation")

    monkeypatch.setattr(TextToVideoPipeline, "from_pretrained", refuse)
    assert cli.main(["generate", "x", "--model", str(tiny_model_dir), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.fixture
def offload_on_cpu(monkeypatch) -> None:
    """Let the offload hooks run with CPU as the 'device': same maths, hooks and bookkeeping exercised."""
    monkeypatch.setattr(offload, "validate_offload", lambda mode, device: mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_hooks_give_the_same_video(tiny_model_dir: Path, offload_on_cpu, mode: str) -> None:
    expected = make_pipe(tiny_model_dir)(**RUN).frames
    pipe = make_pipe(tiny_model_dir, offload=mode)
    assert torch.equal(pipe(**RUN).frames, expected)
    unet = pipe.components.keyframe_unet
    assert hasattr(unet, "_hf_hook") and hasattr(pipe.text.encoder, "_hf_hook")
    if mode == "sequential":  # accelerate keeps the weights aside; the module holds meta placeholders
        assert next(unet.parameters()).device.type == "meta"
    # small parts stay where the pipeline runs
    assert pipe.components.projection.t5[0].weight.device == CPU


def test_model_offload_brings_in_one_network_per_stage(tiny_model_dir: Path, offload_on_cpu) -> None:
    pipe = make_pipe(tiny_model_dir, offload="model")
    seen: dict[str, torch.nn.Module | None] = {}

    def record(stage: str, step: int, total: int) -> None:
        seen.setdefault(stage, pipe.placement.resident)

    pipe(**RUN, callback=record)
    c = pipe.components
    assert seen["keyframes"] is pipe.text.encoder  # the previous stage's network is the resident one
    assert seen["interpolation 1"] is c.keyframe_unet
    assert seen["decoding"] is c.interpolation_unet
    assert pipe.placement.resident is c.movq.decoder


# -- compile ---------------------------------------------------------------------------------


def test_compile_values() -> None:
    assert validate_compile(False) == validate_compile(None) == validate_compile("none") == "none"
    assert validate_compile(True) == "unets"
    assert validate_compile("all") == "all"
    with pytest.raises(ValueError, match="compile: unknown 'max'"):
        validate_compile("max")
    with pytest.raises(ValueError, match="cannot be combined with offload 'model'"):
        validate_compile(True, "model")


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile is unavailable")
@pytest.mark.parametrize("choice, expected", [(True, 2), ("unets", 2), ("all", 3), (False, 0)])
def test_compile_option_compiles_the_networks(tiny_model_dir: Path, monkeypatch, choice, expected) -> None:
    compiled: list[torch.nn.Module] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    pipe = make_pipe(tiny_model_dir, compile=choice)
    c = pipe.components
    assert compiled == [c.keyframe_unet, c.interpolation_unet, c.movq.decoder][:expected]
    assert pipe.compiled == validate_compile(choice)


def test_cli_compile_flag_reaches_the_pipeline(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    seen: dict = {}

    def capture(*_a, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(TextToVideoPipeline, "from_pretrained", capture)
    base = ["generate", "x", "--model", str(tiny_model_dir), "-o", str(tmp_path / "v.mp4"), "--device", "cpu"]
    assert cli.main([*base, "--compile"]) == 2
    assert seen["compile"] == "unets" and seen["offload"] == "none"
    assert cli.main([*base, "--compile", "all"]) == 2
    assert seen["compile"] == "all"


# -- channels-last ---------------------------------------------------------------------------


@pytest.mark.slow
def test_channels_last_decoder_on_cpu_by_default_and_close(tiny_model_dir: Path) -> None:
    auto = make_pipe(tiny_model_dir)
    plain = make_pipe(tiny_model_dir, channels_last=False)
    assert memory_format_of(auto.components.movq.decoder) == torch.channels_last
    assert memory_format_of(plain.components.movq.decoder) == torch.contiguous_format
    assert memory_format_of(auto.components.keyframe_unet) == torch.contiguous_format  # measured slower
    a, b = auto(**RUN).frames, plain(**RUN).frames
    assert a.is_contiguous() and a.shape == b.shape
    assert (a - b).abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="channels_last: must be True, False or None"):
        make_pipe(tiny_model_dir, channels_last="yes")


# -- benchmark -------------------------------------------------------------------------------


@pytest.mark.slow
def test_generate_benchmark_runs_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "generate.py"),
        "--model",
        str(tiny_model_dir),
        "--steps",
        "2",
        "--interpolation-steps",
        "1",
        "--fps",
        "medium",
        "--threads",
        "1",
        "--compare",
        "--quiet",
        "--json",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TFLOP/s" in done.stdout and "peak RSS MiB" in done.stdout and "speedup" in done.stdout
    report = json.loads(out.read_text())
    env_info = report["environment"]
    assert env_info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env_info["threads"] == 1 and env_info["torch"] == torch.__version__ and env_info["date"]
    slow, fast = report["results"]
    assert (slow["dtype"], slow["sampler"], slow["steps"], slow["interpolation_steps"]) == (
        "float32",
        "ddpm",
        50,
        50,
    )
    assert (fast["steps"], fast["interpolation_steps"]) == (2, 1)
    names = [s["stage"] for s in fast["stages"]]
    assert names == ["text encoding", "keyframes", "interpolation 1", "decoding", "total"]
    by_name = {s["stage"]: s for s in fast["stages"]}
    assert by_name["keyframes"]["calls"] == 2 and by_name["interpolation 1"]["calls"] == 1
    assert by_name["decoding"]["calls"] == fast["frames"] == 13
    for stage in fast["stages"]:
        assert stage["wall_s"] > 0 and stage["gflop"] >= 0 and stage["peak_mib"] > 0
    assert by_name["keyframes"]["gflop"] > 0 and by_name["total"]["tflops"] > 0
    assert fast["load_s"] > 0 and report["speedup"] > 1.0


def test_benchmark_random_weights_from_meta_are_finite() -> None:
    import importlib.util

    from conftest import tiny_config

    from fusionframes.components import build_components

    spec = importlib.util.spec_from_file_location("bench_generate", ROOT / "benchmarks" / "generate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    unet = build_components(tiny_config(), "unused", device="meta").interpolation_unet
    bench.randomize_(unet.to_empty(device="cpu"))
    assert all(torch.isfinite(p).all() for p in unet.parameters())
    assert unet.time_embed_merge.item() == 0.0 and unet.skip_merge.item() == 0.0
    assert unet.out_layer[0].weight.eq(1.0).all() and unet.out_layer[0].bias.eq(0.0).all()
    assert unet.in_layer.weight.std() > 0
