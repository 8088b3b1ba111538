"""One video on two processes (gloo, CPU): guidance branches split across ranks, same output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fusionframes import TextToVideoPipeline
from fusionframes.io.checkpoints import load_model_folder
from fusionframes.parallel import BranchParallel, SequentialBranches, branch_blocks, distribute_branches

RUN = {
    "prompt": "a red circle moving right on a gray background",
    "num_inference_steps": 2,
    "interpolation_steps": 2,
    "fps": "medium",
    "seed": 3,
    "output_type": "pt",
    "progress": False,
}


def _pipe(model_dir: Path) -> TextToVideoPipeline:
    return TextToVideoPipeline(load_model_folder(model_dir), device="cpu", dtype="float32")


def _rank_main(rank: int, world: int, init_file: str, model_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pipe = distribute_branches(_pipe(Path(model_dir)))
        rows: dict[str, list[int]] = {"keyframe_unet": [], "interpolation_unet": []}
        for name in rows:
            inner = getattr(pipe.components, name).module
            inner.register_forward_pre_hook(lambda _m, args, name=name: rows[name].append(args[0].shape[0]))
        video = pipe(**RUN)
        torch.save({"frames": video.frames, "rows": rows}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_branch_blocks_are_contiguous_and_cover_every_branch() -> None:
    assert branch_blocks(2, 2) == [range(0, 1), range(1, 2)]
    assert branch_blocks(3, 2) == [range(0, 2), range(2, 3)]
    assert branch_blocks(2, 1) == [range(0, 2)]
    with pytest.raises(ValueError, match="branches"):
        branch_blocks(0, 2)


def _one_process(model_dir: Path, split: bool) -> torch.Tensor:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: a thread count can change the order of float sums
    try:
        pipe = _pipe(model_dir)
        if split:
            for name in ("keyframe_unet", "interpolation_unet"):
                setattr(pipe.components, name, SequentialBranches(getattr(pipe.components, name)))
        return pipe(**RUN).frames
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_two_gloo_processes_make_the_one_process_video(tiny_model_dir: Path, tmp_path: Path) -> None:
    batched = _one_process(tiny_model_dir, split=False)
    per_branch = _one_process(tiny_model_dir, split=True)
    mp.spawn(
        _rank_main,
        args=(2, str(tmp_path / "init"), str(tiny_model_dir), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for result in results:
        # bit-identical to one process computing the same network calls
        assert torch.equal(result["frames"], per_branch)
        # and to the batched one-process video up to float32 rounding: oneDNN picks its convolution
        # kernels by batch size (per call <= 1e-5), and the first DDPM steps amplify that by 1 / alpha
        assert (result["frames"] - batched).abs().max() <= 5e-4
    # every rank ran its own branch: half the rows of every call (4 keyframes, 3 interpolation groups)
    frames = load_model_folder(tiny_model_dir).config.keyframe_unet.num_frames
    for result in results:
        assert result["rows"]["keyframe_unet"] == [frames] * RUN["num_inference_steps"]
        assert result["rows"]["interpolation_unet"] == [frames - 1] * RUN["interpolation_steps"]


@pytest.mark.slow
def test_one_branch_per_call_matches_the_batched_call(tiny_model_dir: Path) -> None:
    """The split itself is exact up to float32 rounding: one keyframe U-Net call on both branches and
    the two branches called apart agree within 1e-5."""
    from fusionframes.pipelines.stages import temporal_positions

    unet = load_model_folder(tiny_model_dir).keyframe_unet
    cfg, n = unet.config, unet.config.num_frames
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2 * n, cfg.num_channels, 16, 16, generator=gen)
    time = torch.full((2 * n,), 500)
    context = torch.randn(2 * n, 5, cfg.context_dim, generator=gen)
    mask = torch.ones(2 * n, 5, dtype=torch.bool)
    positions = temporal_positions(n).repeat(2)
    with torch.no_grad():
        both = unet(x, time, context, mask, positions, num_frames=n)
        apart = SequentialBranches(unet)(x, time, context, mask, positions, num_frames=n)
    assert (both - apart).abs().max() <= 1e-5


def test_splitting_interpolation_groups_would_change_them(tiny_model_dir: Path) -> None:
    """Why the interpolation pass is split by branch and not by keyframe pair: its temporal attention
    runs across the groups, so the first two groups computed alone differ from the same groups computed
    with their neighbours."""
    unet = load_model_folder(tiny_model_dir).interpolation_unet
    cfg = unet.config
    gen = torch.Generator().manual_seed(0)
    groups = 3
    x = torch.randn(groups, cfg.num_channels, 16, 16, generator=gen)
    time = torch.full((groups,), 500)
    context = torch.zeros(groups, 2, cfg.context_dim)
    mask = torch.ones(groups, 2, dtype=torch.bool)
    skips = torch.full((groups,), 3, dtype=torch.int32)
    with torch.no_grad():
        whole = unet(x, time, context, mask, skip_frames=skips, num_temporal_groups=groups)
        part = unet(x[:2], time[:2], context[:2], mask[:2], skip_frames=skips[:2], num_temporal_groups=2)
    assert (whole[:2] - part).abs().max() > 1e-4


def test_branch_parallel_needs_a_process_group(tiny_model_dir: Path) -> None:
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        BranchParallel(load_model_folder(tiny_model_dir).keyframe_unet)
