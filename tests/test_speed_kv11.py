"""The 1.0 memory and speed options with a Kandinsky Video 1.1 model (tiny random 1.1 architecture).

Each option is compared with the plain float32 run of the same seed. Tolerances (frames in [0, 1]):
offload hooks move weights, nothing else: equal. Channels-last and branch-by-branch U-Net calls change
only the kernels' summation order: <= 1e-4. The int8 text encoder and reduced precision change the
numbers themselves; on this random model (whose errors are amplified by the untrained networks) the
mean absolute difference per pixel stays below the stated bounds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CAPTIONS
from PIL import Image

from fusionframes import cli
from fusionframes.io.checkpoints import load_model_folder
from fusionframes.models.movq import decode_clip
from fusionframes.pipelines import offload
from fusionframes.pipelines.acceleration import memory_format_of
from fusionframes.pipelines.branch_split import BranchByBranch
from fusionframes.pipelines.kandinsky11 import KandinskyVideo11Pipeline
from fusionframes.runtime import resolve_decoder_dtype

PROMPT = CAPTIONS[0]
IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
# Image-to-video: a drawn first frame goes through uint8 pixels before it conditions the keyframes, so
# a 1e-6 change can flip a pixel there and move the whole video by ~1/255; a given image does not.
RUN = {
    "image": IMAGE,
    "num_inference_steps": 1,
    "interpolation_steps": 1,
    "num_keyframes": 3,
    "fps": "low",
    "seed": 3,
    "output_type": "pt",
    "progress": False,
}
_PLAIN: dict[str, torch.Tensor] = {}


def make_pipe(model_dir: Path, **kwargs) -> KandinskyVideo11Pipeline:
    kwargs.setdefault("dtype", "float32")
    return KandinskyVideo11Pipeline(load_model_folder(model_dir), device="cpu", **kwargs)


def plain(model_dir: Path, **run) -> torch.Tensor:
    """The float32 run without options (made once per set of call arguments)."""
    key = repr(sorted((k, id(v) if k == "image" else v) for k, v in run.items()))
    if key not in _PLAIN:
        _PLAIN[key] = make_pipe(model_dir, channels_last=False)(PROMPT, **{**RUN, **run}).frames
    return _PLAIN[key]


@pytest.fixture
def offload_on_cpu(monkeypatch) -> None:
    """Let the offload hooks run with CPU as the 'device': same maths, hooks and bookkeeping exercised."""
    monkeypatch.setattr(offload, "validate_offload", lambda mode, device: mode)


@pytest.mark.parametrize(
    ("mode", "run"),
    [
        pytest.param("model", {"fps": "medium"}, marks=pytest.mark.slow),
        pytest.param("sequential", {}, marks=pytest.mark.slow),
        pytest.param("sequential", {"image": None}, marks=pytest.mark.slow),  # the drawn first frame
    ],
)
def test_offload_gives_the_same_video(tiny_kv11_dir: Path, offload_on_cpu, mode: str, run: dict) -> None:
    pipe = make_pipe(tiny_kv11_dir, offload=mode, channels_last=False)
    assert torch.equal(pipe(PROMPT, **{**RUN, **run}).frames, plain(tiny_kv11_dir, **run))
    video_decoder = pipe.components.video_movq.decoder
    assert hasattr(video_decoder, "_hf_hook") and hasattr(pipe.components.keyframe_unet, "_hf_hook")
    if mode == "model":  # the temporal decoder was the last network brought in
        assert pipe.placement.resident is video_decoder
    else:  # accelerate keeps the weights aside; the modules hold meta placeholders
        assert next(video_decoder.parameters()).device.type == "meta"


@pytest.mark.slow
def test_int8_text_encoder(tiny_kv11_dir: Path) -> None:
    pytest.importorskip("torchao", reason="the int8 text encoder needs the optional torchao")
    quant = make_pipe(tiny_kv11_dir, text_quantization="int8", channels_last=False)
    context, _ = make_pipe(tiny_kv11_dir)._text_conditioner()([PROMPT])
    context8, _ = quant._text_conditioner()([PROMPT])
    torch.testing.assert_close(context8, context, atol=0.05, rtol=0.05)
    video = quant(PROMPT, **RUN).frames
    assert (video - plain(tiny_kv11_dir)).abs().mean() < 0.01


@pytest.mark.slow
def test_branch_by_branch_calls_give_the_same_video(tiny_kv11_dir: Path) -> None:
    pipe = make_pipe(tiny_kv11_dir, split_branches=True, channels_last=False)
    c = pipe.components
    assert isinstance(c.keyframe_unet, BranchByBranch) and isinstance(c.interpolation_unet, BranchByBranch)
    rows: dict[str, list[int]] = {"keyframe": [], "interpolation": []}
    hooks = [
        c.keyframe_unet.module.register_forward_pre_hook(lambda m, a: rows["keyframe"].append(len(a[0]))),
        c.interpolation_unet.module.register_forward_pre_hook(
            lambda m, a: rows["interpolation"].append(len(a[0]))
        ),
    ]
    try:
        video = pipe(PROMPT, **{**RUN, "fps": "medium"}).frames
    finally:
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(video, plain(tiny_kv11_dir, fps="medium"), atol=1e-4, rtol=0)
    # keyframes: 3 branches x 3 rows; interpolation: 2 branches x 2 groups (one step each)
    assert rows == {"keyframe": [3, 3, 3], "interpolation": [2, 2]}
    with pytest.raises(ValueError, match="split_branches: must be True or False"):
        make_pipe(tiny_kv11_dir, split_branches="yes")


@pytest.mark.slow
def test_branch_split_keeps_tiny_blocks_whole(tiny_kv11_dir: Path) -> None:
    """Two keyframes per branch would switch a 1.1 keyframe U-Net to its image layer: run whole."""
    pipe = make_pipe(tiny_kv11_dir, split_branches=True, channels_last=False)
    rows: list[int] = []
    hook = pipe.components.keyframe_unet.module.register_forward_pre_hook(lambda m, a: rows.append(len(a[0])))
    try:
        pipe(PROMPT, **{**RUN, "num_keyframes": 2, "image": None})
    finally:
        hook.remove()
    assert rows == [1, 1, 6]  # the first frame's two rows apart (image mode either way), keyframes whole


def test_channels_last_and_precision_choices_reach_both_decoders(tiny_kv11_dir: Path) -> None:
    auto = make_pipe(tiny_kv11_dir, dtype="float16")
    c = auto.components
    assert memory_format_of(c.video_movq.decoder) == memory_format_of(c.movq.decoder) == torch.channels_last
    assert memory_format_of(c.keyframe_unet) == torch.contiguous_format  # measured slower (1.0)
    assert next(c.keyframe_unet.parameters()).dtype == torch.float16
    assert next(c.movq.parameters()).dtype == next(c.video_movq.parameters()).dtype == torch.float32
    off = make_pipe(tiny_kv11_dir, channels_last=False, dtype="bfloat16", decoder_dtype="float16")
    assert memory_format_of(off.components.video_movq.decoder) == torch.contiguous_format
    assert next(off.components.video_movq.parameters()).dtype == torch.float16
    assert resolve_decoder_dtype("auto", torch.bfloat16).dtype == torch.bfloat16
    assert resolve_decoder_dtype(None, torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="decoder_dtype: unknown 'half'"):
        make_pipe(tiny_kv11_dir, decoder_dtype="half")


@pytest.mark.slow
def test_channels_last_decoders_are_close(tiny_kv11_dir: Path) -> None:
    auto = make_pipe(tiny_kv11_dir)
    for run in ({}, {"decoder": "image"}):
        video = auto(PROMPT, **{**RUN, **run}).frames
        torch.testing.assert_close(video, plain(tiny_kv11_dir, **run), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("dtype", "decoder_dtype", "movq", "bound"),
    [
        pytest.param("bfloat16", "auto", torch.bfloat16, 0.03, marks=pytest.mark.slow),  # float32's range
        pytest.param("float32", "bfloat16", torch.bfloat16, 0.005, marks=pytest.mark.slow),
        pytest.param("float16", "auto", torch.float32, 0.005, marks=pytest.mark.slow),  # as the reference
        pytest.param("bfloat16", "float32", torch.float32, 0.03, marks=pytest.mark.slow),
    ],
)
def test_reduced_precision_keeps_the_decoders_where_asked(
    tiny_kv11_dir: Path, dtype: str, decoder_dtype: str, movq: torch.dtype, bound: float
) -> None:
    pipe = make_pipe(tiny_kv11_dir, dtype=dtype, decoder_dtype=decoder_dtype)
    c = pipe.components
    assert next(c.keyframe_unet.parameters()).dtype == pipe.dtype == getattr(torch, dtype)
    assert next(c.movq.parameters()).dtype == next(c.video_movq.parameters()).dtype == movq
    assert pipe.decoder_precision.dtype == movq
    video = pipe(PROMPT, **RUN).frames
    assert video.dtype == torch.float32 and torch.isfinite(video).all()
    assert (video - plain(tiny_kv11_dir)).abs().mean() < bound


@pytest.mark.slow
def test_chunked_decoding_windows_approach_the_whole_clip(tiny_kv11_dir: Path) -> None:
    """The temporal MoVQ in overlapping windows (bounded memory) against one whole-clip decode, and the
    reference's 4-frame pieces (its seams) against the same."""
    movq = make_pipe(tiny_kv11_dir).components.video_movq
    latents = torch.randn(9, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    latents = latents.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        whole = decode_clip(movq, latents, window=9)
        windows = decode_clip(movq, latents, window=5, overlap=2)
        pieces = decode_clip(movq, latents)
    assert windows.shape == whole.shape == pieces.shape == (9, 3, 64, 64)
    windowed, seams = (windows - whole).abs().mean(), (pieces - whole).abs().mean()
    assert 0 < windowed < seams


def test_cli_memory_options_reach_the_11_pipeline(tiny_kv11_dir: Path, tmp_path: Path, monkeypatch) -> None:
    seen: dict = {}

    def capture(*_a, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(KandinskyVideo11Pipeline, "from_pretrained", capture)
    base = ["generate", "x", "--model", str(tiny_kv11_dir), "-o", str(tmp_path / "v.gif"), "--device", "cpu"]
    argv = [*base, "--split-branches", "--decoder-dtype", "float32", "--text-quantization", "none"]
    assert cli.main(argv) == 2
    assert seen["split_branches"] is True and seen["decoder_dtype"] == "float32"
    assert seen["offload"] == "none" and seen["text_quantization"] == "none"


@pytest.mark.slow
def test_generate_benchmark_runs_the_11_preset_at_a_small_scale(tmp_path: Path) -> None:
    """``benchmarks/generate.py --preset kandinsky-video-1.1``: random weights built on meta at the
    1.1 architecture, here at the tiny test sizes so the run takes seconds."""
    import json
    import os
    import subprocess
    import sys

    tiny = {"channels": 8, "context_dim": 16, "levels": 2, "groups": 4, "head_dim": 8}
    tiny |= {"movq_channels": 8, "movq_levels": 3, "size": 64}
    out = tmp_path / "bench.json"
    command = [sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "generate.py")]
    command += ["--preset", "kandinsky-video-1.1", "--small-config", json.dumps(tiny), "--dtype", "float32"]
    command += ["--steps", "2", "--interpolation-steps", "1", "--keyframes", "3", "--fps", "medium"]
    command += ["--split-branches", "--threads", "1", "--quiet", "--json", str(out)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = json.loads(out.read_text())["results"]
    assert (result["release"], result["decoder"], result["split_branches"]) == ("1.1", "video", True)
    assert result["frames"] == 9 and result["size"] == "64x64" and result["keyframes"] == 3
    by_name = {s["stage"]: s for s in result["stages"]}
    assert list(by_name) == [
        "text encoding",
        "first frame",
        "keyframes",
        "interpolation 1",
        "decoding",
        "total",
    ]
    # branch by branch: first frame 2 steps x 2 rows apart + 1 decode; keyframes 2 x 3; interpolation 1 x 2
    assert [by_name[s]["calls"] for s in ("first frame", "keyframes", "interpolation 1")] == [5, 6, 2]
    assert by_name["decoding"]["calls"] == 2  # the reference's pieces of 9 frames: 5 + 4
    for stage in result["stages"]:
        assert stage["wall_s"] > 0 and stage["gflop"] > 0 and stage["peak_mib"] > 0
