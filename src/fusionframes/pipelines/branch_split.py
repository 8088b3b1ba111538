"""Run the guidance branches of each U-Net call one after another instead of as one batch.

Every guided denoiser stacks its branches along the batch: ``[cond | uncond]`` (1.0 keyframes, both
releases' interpolation, 1.1's first frame), ``[text + image | image | neither]`` (1.1 keyframes).
The activations of a call grow with its rows, so the widest call of a video (the second interpolation
pass at fps ``high``: 2 x 44 groups for 1.1, 2 x 56 for 1.0) sets the transient memory peak. A U-Net's
temporal layers mix rows only inside one block of a branch (the N keyframes of a video, or the G groups
of an interpolation pass; see :mod:`fusionframes.parallel.branches`), so the blocks can be run apart
and concatenated: the same output up to float rounding (kernels may pick another order for another
batch size), with the stage's activation peak divided by the number of branches.

This is the memory-bounded way to chunk the interpolation: splitting a pass's groups instead would
change the output, since the interpolation U-Nets' temporal attention runs across all groups of a
branch. It costs some speed where one call of half the rows does not fill the device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def block_rows(module: nn.Module, batch: int, kwargs: dict[str, Any]) -> int | None:
    """Rows of one independent block in a call of ``batch`` rows, or None when the call must run whole.

    A block is ``num_frames`` rows (keyframes) or ``num_temporal_groups`` rows (interpolation); a 1.1
    image-mode call (at most two rows, no temporal inputs) has blocks of one row. A 1.1 keyframe U-Net
    picks its image input layer for batches of at most two rows, so blocks that small stay together.
    """
    config = getattr(module, "config", None)
    image_mode = getattr(config, "image_in_layer", False)
    rows = kwargs.get("num_frames") or kwargs.get("num_temporal_groups")
    if rows is None:
        return 1 if image_mode and batch <= 2 and kwargs.get("temporal_positions") is None else None
    if batch % rows or batch == rows or (image_mode and rows <= 2):
        return None
    return int(rows)


class BranchByBranch(nn.Module):
    """``module`` called once per independent block of rows (see :func:`block_rows`), outputs joined."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    @property
    def config(self) -> Any:
        return self.module.config

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        batch = x.shape[0]
        rows = block_rows(self.module, batch, kwargs)
        if rows is None:
            return self.module(x, *args, **kwargs)

        def cut(value: Any, part: slice) -> Any:
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
                return value[part]
            return value

        outputs = []
        for start in range(0, batch, rows):
            part = slice(start, start + rows)
            piece_args = [cut(a, part) for a in args]
            piece_kwargs = {k: cut(v, part) for k, v in kwargs.items()}
            outputs.append(self.module(x[part], *piece_args, **piece_kwargs))
        return torch.cat(outputs)


def split_branches(components: Any) -> list[str]:
    """Wrap the keyframe and interpolation U-Nets of ``components`` (in place, once); names wrapped."""
    done = []
    for name in ("keyframe_unet", "interpolation_unet"):
        unet = getattr(components, name)
        if not isinstance(unet, BranchByBranch):
            setattr(components, name, BranchByBranch(unet))
            done.append(name)
    return done


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside a :class:`BranchByBranch` (or ``module`` itself)."""
    return module.module if isinstance(module, BranchByBranch) else module
