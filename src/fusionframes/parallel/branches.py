"""The guidance branches of every network call on different ranks, gathered once per call.

A guided denoiser calls its network once per sampler step on a batch of blocks, one block per guidance
branch: ``[cond | uncond]`` for 1.0's keyframes (N frames each) and interpolation (G groups each), three
blocks for 1.1's keyframes. The network's temporal layers mix rows only inside a block (a block is one
video, or one branch's groups), so the blocks are independent: :class:`BranchParallel` runs a contiguous
share of the blocks on each rank and ``all_gather``\\s the outputs, once per call, into the same batch one
process would have made. Every rank runs the whole sampler on the gathered output, so the ranks stay in
step without any other communication.

Why not split the interpolation pass's keyframe pairs instead: the interpolation U-Net's temporal
attention runs across the G groups of a branch (``num_temporal_groups``), so a rank holding only some
groups would see a different set of neighbours and compute something else (``tests/test_parallel.py``
shows the difference); the branch split keeps every block whole.

Run with one process per device (``torchrun --nproc_per_node 2 ...``; gloo on CPU, NCCL on GPUs) after
``torch.distributed.init_process_group``, then :func:`distribute_branches` on the pipeline.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def branch_blocks(branches: int, world_size: int) -> list[range]:
    """Contiguous blocks per rank, as even as possible (rank r gets ``blocks[r]``; three 1.1 branches on
    two ranks: ``[0, 1]`` and ``[2]``)."""
    if branches < 1 or world_size < 1:
        raise ValueError(f"branches and world_size: must be >= 1, got {branches} and {world_size}")
    base, extra = divmod(branches, world_size)
    out, start = [], 0
    for rank in range(world_size):
        size = base + (1 if rank < extra else 0)
        out.append(range(start, start + size))
        start += size
    return out


def rows_per_branch(who: str, batch: int, branches: int) -> int:
    """Rows of one guidance branch in a batch of ``branches`` equal blocks; an unequal batch is an error."""
    if batch % branches:
        raise ValueError(f"{who}: batch of {batch} rows is not {branches} equal branches")
    return batch // branches


def call_on_rows(
    module: nn.Module, part: slice, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> torch.Tensor:
    """``module`` on rows ``part`` of the batch: every tensor argument whose first dimension is the
    batch size is cut to them; other arguments (frame and group counts, scalars) pass unchanged."""
    batch = x.shape[0]

    def cut(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
            return value[part]
        return value

    return module(cut(x), *map(cut, args), **{k: cut(v) for k, v in kwargs.items()})


class BranchParallel(nn.Module):
    """``module`` whose batch of ``branches`` equal blocks is split across the ranks of ``group``.

    Every tensor argument whose first dimension is the batch size is cut to the rank's rows; other
    arguments (frame and group counts, scalars) are passed unchanged. The output is the whole batch on
    every rank.
    """

    def __init__(self, module: nn.Module, branches: int = 2, group: Any = None) -> None:
        super().__init__()
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("BranchParallel: call torch.distributed.init_process_group first")
        self.module = module
        self.branches = branches
        self.group = group
        world = dist.get_world_size(group)
        if world > branches:
            raise ValueError(
                f"world_size: {branches} guidance branches per call; use at most {branches} ranks"
            )
        self.rank = dist.get_rank(group)
        self.blocks = branch_blocks(branches, world)

    @property
    def config(self):
        return self.module.config

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        rows = rows_per_branch("BranchParallel", x.shape[0], self.branches)
        mine = self.blocks[self.rank]
        out = call_on_rows(self.module, slice(mine.start * rows, mine.stop * rows), x, args, kwargs)
        most = max(len(b) for b in self.blocks) * rows  # all_gather needs equal sizes: pad the short ones
        padded = torch.cat([out, out.new_zeros((most - out.shape[0], *out.shape[1:]))])
        gathered = [torch.empty_like(padded) for _ in self.blocks]
        dist.all_gather(gathered, padded.contiguous(), group=self.group)
        return torch.cat([g[: len(b) * rows] for g, b in zip(gathered, self.blocks, strict=True)])


class SequentialBranches(nn.Module):
    """``module`` called once per guidance branch on one device, the branches' outputs concatenated.

    This is what a :class:`BranchParallel` run computes, on one process: the check that a multi-device
    video is the one-device video of the same network calls (bit-identical on CPU). The batched call
    can differ from it in the last float32 bits, since CPU kernels pick their blocking by batch size.
    """

    def __init__(self, module: nn.Module, branches: int = 2) -> None:
        super().__init__()
        self.module = module
        self.branches = branches

    @property
    def config(self):
        return self.module.config

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        rows = rows_per_branch("SequentialBranches", x.shape[0], self.branches)
        parts = [slice(b * rows, (b + 1) * rows) for b in range(self.branches)]
        return torch.cat([call_on_rows(self.module, part, x, args, kwargs) for part in parts])


def distribute_branches(pipe: Any, group: Any = None) -> Any:
    """Split the guidance branches of ``pipe``'s keyframe and interpolation U-Nets across ``group``'s
    ranks (in place; returns ``pipe``). Every rank must run the same call with the same seed."""
    components = pipe.components
    for name in ("keyframe_unet", "interpolation_unet"):
        unet = getattr(components, name)
        if not isinstance(unet, BranchParallel):
            setattr(components, name, BranchParallel(unet, branches=2, group=group))
    return pipe
