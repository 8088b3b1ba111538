"""Cadence: diffuse every K-th frame and fill the frames between by warping, not denoising.

With cadence ``K`` the pipeline redraws frames ``i`` and ``i + K``; in-between frame ``i + j`` is

    (1 - w) * warp(prev, motions[1..j]) + w * unwarp(next, motions[j+1..K]),   w = j / K

i.e. the earlier redraw carried forward by the camera moves so far, cross-faded with the later redraw
carried back by the moves still to come. Both warps follow the camera exactly, so only the redraw's
own changes fade; pixels one side cannot see (they came from outside its frame) take the other side.
Chained moves are composed on coordinates and sampled once. In 3D the same depth map is used for
every step (the scene is assumed not to change depth much within K frames).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fusionframes.camera.warp import (
    DEFAULT_FOV_DEG,
    CameraMotion,
    check_image,
    pixel_grid,
    prepare_depth,
    sample,
    source_coords,
    target_coords,
)


def chain_source_coords(
    motions: Sequence[CameraMotion],
    height: int,
    width: int,
    *,
    depth: torch.Tensor | float | None = None,
    fov_deg: float = DEFAULT_FOV_DEG,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """For each pixel after all ``motions``, its position before the first (``[B or 1, H, W, 2]``)."""
    coords = pixel_grid(height, width, device=device)
    for motion in reversed(motions):
        coords = source_coords(motion, coords, height, width, depth=depth, fov_deg=fov_deg)
    return coords


def chain_target_coords(
    motions: Sequence[CameraMotion],
    height: int,
    width: int,
    *,
    depth: torch.Tensor | float | None = None,
    fov_deg: float = DEFAULT_FOV_DEG,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """For each pixel before the first of ``motions``, where it is after the last."""
    coords = pixel_grid(height, width, device=device)
    for motion in motions:
        coords = target_coords(motion, coords, height, width, depth=depth, fov_deg=fov_deg)
    return coords


def _inside(coords: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, 1, H, W]`` float mask of coordinates that land inside the sampled frame."""
    x, y = coords[..., 0], coords[..., 1]
    ok = (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)
    return ok[:, None].float()


def blend_cadence(
    prev_frame: torch.Tensor,
    next_frame: torch.Tensor,
    motions: Sequence[CameraMotion],
    *,
    depth: torch.Tensor | float | None = None,
    fov_deg: float = DEFAULT_FOV_DEG,
    border: str = "reflect",
    interpolation: str = "bicubic",
) -> list[torch.Tensor]:
    """The ``K - 1`` frames between two redraws ``K = len(motions)`` frames apart.

    ``motions[j]`` is the move that produces frame ``i + j + 1`` from frame ``i + j`` (so
    ``motions[K - 1]`` leads to ``next_frame``). ``depth`` belongs to ``prev_frame`` (used for both
    directions). Returns tensors shaped like ``prev_frame``.
    """
    prev, nxt = check_image(prev_frame, "prev_frame"), check_image(next_frame, "next_frame")
    if prev.shape != nxt.shape:
        raise ValueError(
            f"next_frame: must match prev_frame's shape {tuple(prev.shape)}, got {tuple(nxt.shape)}"
        )
    if len(motions) < 1 or not all(isinstance(m, CameraMotion) for m in motions):
        raise ValueError(
            "motions: expected a non-empty sequence of CameraMotion (one per frame of the cadence)"
        )
    h, w = prev.shape[-2:]
    d = prepare_depth(depth, prev) if depth is not None else None
    cadence = len(motions)
    frames = []
    for j in range(1, cadence):
        back = chain_source_coords(motions[:j], h, w, depth=d, fov_deg=fov_deg, device=prev.device)
        ahead = chain_target_coords(motions[j:], h, w, depth=d, fov_deg=fov_deg, device=prev.device)
        from_prev = sample(prev, back, border=border, interpolation=interpolation)
        from_next = sample(nxt, ahead, border=border, interpolation=interpolation)
        weight = j / cadence
        wp = (1 - weight) * _inside(back, h, w).expand(prev.shape[0], 1, h, w)
        wn = weight * _inside(ahead, h, w).expand(prev.shape[0], 1, h, w)
        total = wp + wn
        wp = torch.where(total > 0, wp / total.clamp_min(1e-12), torch.full_like(wp, 1 - weight))
        out = (from_prev * wp + from_next * (1 - wp)).to(prev.dtype)
        frames.append(out if prev_frame.dim() == 4 else out[0])
    return frames
