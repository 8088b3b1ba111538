"""The three generation stages as plain functions: keyframes, interpolation passes, decoding.

Each stage takes networks and tensors, so pipelines, training previews and benchmarks share them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fusionframes.config import check_layout_prior_strength
from fusionframes.diffusion.guidance import guided
from fusionframes.diffusion.sampling import (
    StepCallback,
    randn,
    sample_ddpm,
    start_step,
    terminal_skipped,
    video_noise,
)
from fusionframes.diffusion.schedule import DiffusionSchedule
from fusionframes.models import MoVQ, UNet3D
from fusionframes.pipelines.acceleration import memory_format_of
from fusionframes.text.conditioning import null_context

VIDEO_SPAN = 180  # temporal positions of N keyframes are 0, 180 // N, 2 * 180 // N, ...

Sampler = Callable[..., torch.Tensor]


def temporal_positions(num_frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    step = VIDEO_SPAN // num_frames
    return torch.arange(0, step * num_frames, step, device=device)[:num_frames]


def keyframe_denoiser(
    unet: UNet3D,
    context: torch.Tensor,
    context_mask: torch.Tensor,
    uncond_context: torch.Tensor,
    uncond_mask: torch.Tensor,
    guidance_scale: float,
    num_frames: int,
):
    """CFG denoiser for N keyframes of one video: conditional and unconditional rows in one batch.

    ``context``/``uncond_context`` are ``[1, L, D]``; they are repeated for every frame here.
    """
    dtype = next(unet.parameters()).dtype
    both_context = torch.cat([context.expand(num_frames, -1, -1), uncond_context.expand(num_frames, -1, -1)])
    both_mask = torch.cat([context_mask.expand(num_frames, -1), uncond_mask.expand(num_frames, -1)]).bool()
    both_context = both_context.to(dtype)
    positions = temporal_positions(num_frames, context.device).repeat(2)

    def run_both(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return unet(
            x.repeat(2, 1, 1, 1).to(dtype),
            time.repeat(2),
            both_context,
            both_mask,
            positions,
            num_frames=num_frames,
        )

    return guided(run_both, guidance_scale)


def generate_keyframes(
    unet: UNet3D,
    context: torch.Tensor,
    context_mask: torch.Tensor,
    uncond_context: torch.Tensor,
    uncond_mask: torch.Tensor,
    latent_shape: tuple[int, int, int],
    num_frames: int,
    schedule: DiffusionSchedule,
    guidance_scale: float,
    generator: torch.Generator | None = None,
    sampler: Sampler = sample_ddpm,
    callback: StepCallback | None = None,
    progress: bool = True,
    percentile: float | None = 0.98,
    noise_sharing: float = 0.0,
    skip_terminal: bool = False,
    matched_time: bool = False,
    prediction: str = "epsilon",
    layout: torch.Tensor | None = None,
    layout_strength: float = 1.0,
) -> torch.Tensor:
    """Denoise ``num_frames`` keyframe latents ``[N, C, h, w]`` for one prompt.

    ``layout``: keyframe latents to start from (a layout prior's output), noised like an image-to-image
    redraw at ``layout_strength`` (1: every step runs and the layout barely matters).

    ``prediction``: what the U-Net outputs, epsilon as released.

    ``noise_sharing``: the frame-noise correlation the model was trained with (its
    ``sampling.frame_noise_sharing``), used for the initial noise and every DDPM step's noise.
    ``skip_terminal``: start one step below pure noise (``sampling.skip_terminal_step``; see
    :func:`fusionframes.diffusion.sampling.terminal_skipped`), same number of network calls.
    """
    if skip_terminal:
        schedule = terminal_skipped(schedule.num_steps)
    denoise = keyframe_denoiser(
        unet, context, context_mask, uncond_context, uncond_mask, guidance_scale, num_frames
    )
    device = context.device
    noise = video_noise((num_frames, *latent_shape), noise_sharing, generator, device)
    step_noise = None
    if noise_sharing > 0:

        def step_noise(shape: tuple[int, ...]) -> torch.Tensor:
            return video_noise(shape, noise_sharing, generator, device)

    layout_start = {}
    if layout is not None:
        total = start_step(schedule.num_steps, skip_terminal) + 1
        run = denoise_steps(check_layout_prior_strength(layout_strength, "layout_strength"), total)
        layout_start = {"init_sample": layout.to(device), "skip_steps": total - run}
    return sampler(
        denoise,
        noise,
        schedule,
        prediction,
        generator=generator,
        percentile=percentile,
        callback=callback,
        desc="keyframes",
        disable=not progress,
        noise=step_noise,
        skip_terminal=skip_terminal,
        matched_time=matched_time,
        **layout_start,
    )


def denoise_steps(strength: float, steps: int) -> int:
    """How many of ``steps`` steps a redraw at ``strength`` runs: round(s * steps), at least 1 if s > 0.

    At least one step so that any non-zero strength really redraws (tiny strengths would otherwise
    silently do nothing).
    """
    if strength <= 0.0:
        return 0
    return min(steps, max(1, round(strength * steps)))


def interpolation_denoiser(
    unet: UNet3D,
    null_embedding: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    skip_frames: int,
    guidance_scale: float,
):
    """CFG denoiser for G groups of three in-between latents.

    Both branches see the null text (the released interpolation model is not text-conditioned); the
    unconditional branch also loses its neighbouring keyframes, so guidance pushes towards them.
    """
    dtype = next(unet.parameters()).dtype
    groups = left.shape[0]
    context, mask = null_context(null_embedding, 2 * groups, 2, dtype=dtype)
    zeros = torch.zeros_like(left)
    both_left = torch.cat([left, zeros]).to(dtype)
    both_right = torch.cat([right, zeros]).to(dtype)
    skips = torch.full((2 * groups,), skip_frames, dtype=torch.int32, device=left.device)

    def run_both(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([both_left, x.repeat(2, 1, 1, 1).to(dtype), both_right], dim=1)
        return unet(rows, time.repeat(2), context, mask.bool(), skip_frames=skips, num_temporal_groups=groups)

    return guided(run_both, guidance_scale)


def blend_neighbours(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Linear blends at 1/4, 2/4 and 3/4 between each pair ``[G, C, h, w]`` -> ``[G, 3C, h, w]``: the base
    a residual interpolation model (``interpolation_residual``) adds its output to."""
    return torch.cat([torch.lerp(left, right, w) for w in (0.25, 0.5, 0.75)], dim=1)


def scatter_frames(keyframes: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """N keyframes ``[N, C, h, w]`` + N-1 groups ``[N-1, 3C, h, w]`` -> 4N-3 frames in time order."""
    n, c, h, w = keyframes.shape
    if groups.shape != (n - 1, 3 * c, h, w):
        raise ValueError(f"groups: expected shape {(n - 1, 3 * c, h, w)}, got {tuple(groups.shape)}")
    middles = groups.reshape(n - 1, 3, c, h, w)
    out = torch.cat([keyframes[:-1, None], middles], dim=1).reshape(4 * (n - 1), c, h, w)
    return torch.cat([out, keyframes[-1:]])


def interpolate_pass(
    unet: UNet3D,
    null_embedding: torch.Tensor,
    frames: torch.Tensor,
    skip_frames: int,
    schedule: DiffusionSchedule,
    guidance_scale: float,
    generator: torch.Generator | None = None,
    sampler: Sampler = sample_ddpm,
    callback: StepCallback | None = None,
    progress: bool = True,
    desc: str = "interpolation",
    percentile: float | None = 0.98,
    residual: bool = False,
    prediction: str = "v",
    matched_time: bool = False,
) -> torch.Tensor:
    """One pass: N latents -> 4N-3 latents, every neighbouring pair's three in-betweens in one batch.

    ``residual``: the model denoises the difference from the neighbours' linear blend (its
    ``sampling.interpolation_residual``); the blend is added back here. ``prediction``: what the
    network outputs (``sampling.interpolation_prediction``).
    """
    left, right = frames[:-1].float(), frames[1:].float()
    denoise = interpolation_denoiser(unet, null_embedding, left, right, skip_frames, guidance_scale)
    noise = randn((left.shape[0], 3 * frames.shape[1], *frames.shape[2:]), generator, frames.device)
    groups = sampler(
        denoise,
        noise,
        schedule,
        prediction,
        generator=generator,
        percentile=percentile,
        callback=callback,
        desc=desc,
        disable=not progress,
        matched_time=matched_time,
    )
    if residual:
        groups = groups + blend_neighbours(left, right)
    return scatter_frames(frames.float(), groups)


def decode_latents(
    movq: MoVQ, latents: torch.Tensor, chunk_size: int = 4, progress: bool = True
) -> torch.Tensor:
    """Latents -> RGB in [0, 1] ``[T, 3, H, W]`` float32, ``chunk_size`` frames at a time (bounded memory)."""
    from tqdm.auto import tqdm

    if chunk_size < 1:
        raise ValueError(f"decode_chunk_size: must be >= 1, got {chunk_size}")
    dtype = next(movq.parameters()).dtype
    layout = memory_format_of(movq.decoder)  # channels-last on CPU (faster there); see acceleration.py
    chunks = []
    for chunk in tqdm(latents.split(chunk_size), desc="decoding", disable=not progress, leave=False):
        chunk = chunk.to(dtype).contiguous(memory_format=layout)
        chunks.append(movq.decode(chunk).float().add(1.0).div(2.0).clamp(0.0, 1.0).contiguous())
    return torch.cat(chunks)
