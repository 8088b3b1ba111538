"""The three generation stages as plain functions: keyframes, interpolation passes, decoding.

Each stage takes the network, its parameterisation (how it was trained:
:mod:`fusionframes.diffusion.parameterisation`), the conditioning, the schedule to walk and the
generator. A stage lays the network's rows out for guidance (a guided model), lets the
parameterisation wrap that into a denoiser, and runs the sampler the schedule is for. Pipelines,
training previews and benchmarks share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fusionframes.diffusion.guidance import Model, guided
from fusionframes.diffusion.parameterisation import Anchored, Parameterisation
from fusionframes.diffusion.samplers import run_sampler
from fusionframes.diffusion.sampling import StepCallback
from fusionframes.diffusion.solvers import SolverSteps
from fusionframes.models import MoVQ, UNet3D
from fusionframes.pipelines.acceleration import memory_format_of
from fusionframes.text.conditioning import null_context

VIDEO_SPAN = 180  # temporal positions of N keyframes are 0, 180 // N, 2 * 180 // N, ...


def temporal_positions(num_frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    step = VIDEO_SPAN // num_frames
    return torch.arange(0, step * num_frames, step, device=device)[:num_frames]


@dataclass(frozen=True)
class TextBranches:
    """The prompt's context and what the unconditional rows see instead (the null embedding, or a
    negative prompt's context), each ``[1, L, D]`` with a ``[1, L]`` mask; both have the same L."""

    context: torch.Tensor
    mask: torch.Tensor
    uncond_context: torch.Tensor
    uncond_mask: torch.Tensor

    @classmethod
    def with_null(
        cls, context: torch.Tensor, mask: torch.Tensor, null_embedding: torch.Tensor
    ) -> TextBranches:
        """The reference's unconditional context: the null embedding in slot 0, zeros after, same length."""
        uncond = torch.zeros_like(context)
        uncond[:, 0] = null_embedding.to(context)
        uncond_mask = torch.zeros_like(mask)
        uncond_mask[:, 0] = 1
        return cls(context, mask, uncond, uncond_mask)

    def to(self, device: torch.device | str) -> TextBranches:
        return TextBranches(
            *(t.to(device) for t in (self.context, self.mask, self.uncond_context, self.uncond_mask))
        )

    def rows(self, pattern: str, repeat: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Context and bool mask for blocks of ``repeat`` rows, ``pattern`` one letter per block:
        ``c`` the prompt, ``u`` the unconditional context."""
        blocks = {"c": (self.context, self.mask), "u": (self.uncond_context, self.uncond_mask)}
        contexts = [blocks[k][0].expand(repeat, -1, -1) for k in pattern]
        masks = [blocks[k][1].expand(repeat, -1) for k in pattern]
        return torch.cat(contexts).to(dtype), torch.cat(masks).bool()


@dataclass(frozen=True)
class KeyframeConditioning:
    """What 1.0 keyframes (and single frames) are conditioned on: the prompt branches and the weight."""

    text: TextBranches
    guidance_scale: float


@dataclass(frozen=True)
class InterpolationConditioning:
    """What a 1.0 interpolation pass is conditioned on: the null text (the released interpolation
    model is not text-conditioned) and the weight that pushes towards the neighbouring keyframes."""

    null_embedding: torch.Tensor
    guidance_scale: float


@dataclass(frozen=True)
class Start:
    """Where keyframe sampling starts instead of pure noise: ``init`` latents noised to the first
    step's level (a layout prior's output, an image-to-image redraw), or an ``anchor`` latent that the
    first keyframe is pinned to at every step (a movie scene that continues the previous one)."""

    init: torch.Tensor | None = None
    anchor: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.init is not None and self.anchor is not None:
            raise ValueError("start: give init latents or an anchor, not both")


def network_dtype(network: torch.nn.Module) -> torch.dtype:
    return next(network.parameters()).dtype


def frames_model(unet: UNet3D, cond: KeyframeConditioning, num_frames: int, batch: int = 1) -> Model:
    """Guided model of ``batch`` videos of ``num_frames`` keyframes each (conditional and unconditional
    rows in one batch); ``num_frames=1`` makes every row a one-frame video (the image mode)."""
    dtype = network_dtype(unet)
    rows = num_frames * batch
    context, mask = cond.text.rows("cu", rows, dtype)
    positions = temporal_positions(num_frames, context.device).repeat(2 * batch)

    def run_both(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return unet(
            x.repeat(2, 1, 1, 1).to(dtype), time.repeat(2), context, mask, positions, num_frames=num_frames
        )

    return guided(run_both, cond.guidance_scale)


def generate_keyframes(
    unet: UNet3D,
    param: Parameterisation,
    cond: KeyframeConditioning,
    shape: tuple[int, int, int, int],
    schedule: Any,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    start: Start | None = None,
) -> torch.Tensor:
    """Denoise keyframe latents of ``shape`` ``[N, C, h, w]`` (one video) along ``schedule`` (built by
    ``param.schedule``), from noise drawn by the schedule's noise source, or from ``start``."""
    start = start or Start()
    device = cond.text.context.device
    denoise: Any = param.denoiser(frames_model(unet, cond, shape[0]), schedule)
    x = schedule.noise(tuple(shape), generator, device)
    init = start.init.to(device) if start.init is not None else None
    if start.anchor is not None:
        if isinstance(schedule, SolverSteps):
            raise ValueError(f"scheduler: an anchored first keyframe needs 'ddpm', not {schedule.name!r}")
        denoise = Anchored(denoise, start.anchor.reshape(1, *shape[1:]).to(device), generator)
    x = run_sampler(denoise, schedule.start(x, init), schedule, generator, callback)
    return denoise.finish(x) if start.anchor is not None else x


def interpolation_model(
    unet: UNet3D, cond: InterpolationConditioning, left: torch.Tensor, right: torch.Tensor, skip_frames: int
) -> Model:
    """Guided model of G groups of three in-between latents.

    Both branches see the null text; the unconditional branch also loses its neighbouring keyframes,
    so guidance pushes towards them.
    """
    dtype = network_dtype(unet)
    groups = left.shape[0]
    context, mask = null_context(cond.null_embedding, 2 * groups, 2, dtype=dtype)
    zeros = torch.zeros_like(left)
    both_left = torch.cat([left, zeros]).to(dtype)
    both_right = torch.cat([right, zeros]).to(dtype)
    skips = torch.full((2 * groups,), skip_frames, dtype=torch.int32, device=left.device)

    def run_both(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([both_left, x.repeat(2, 1, 1, 1).to(dtype), both_right], dim=1)
        return unet(rows, time.repeat(2), context, mask.bool(), skip_frames=skips, num_temporal_groups=groups)

    return guided(run_both, cond.guidance_scale)


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
    param: Parameterisation,
    cond: InterpolationConditioning,
    frames: torch.Tensor,
    skip_frames: int,
    schedule: Any,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """One pass: N latents -> 4N-3 latents, every neighbouring pair's three in-betweens in one batch;
    ``skip_frames`` is the code the interpolation U-Net gets for the pass (3, then 1)."""
    left, right = frames[:-1].float(), frames[1:].float()
    denoise = param.denoiser(interpolation_model(unet, cond, left, right, skip_frames), schedule)
    noise = schedule.noise((left.shape[0], 3 * frames.shape[1], *frames.shape[2:]), generator, frames.device)
    groups = run_sampler(denoise, schedule.start(noise), schedule, generator, callback)
    return scatter_frames(frames.float(), param.finish(groups, blend_neighbours(left, right)))


def decode_latents(
    movq: MoVQ, latents: torch.Tensor, chunk_size: int = 4, progress: bool = True
) -> torch.Tensor:
    """Latents -> RGB in [0, 1] ``[T, 3, H, W]`` float32, ``chunk_size`` frames at a time (bounded memory)."""
    from tqdm.auto import tqdm

    if chunk_size < 1:
        raise ValueError(f"decode_chunk_size: must be >= 1, got {chunk_size}")
    dtype = network_dtype(movq)
    layout = memory_format_of(movq.decoder)  # channels-last on CPU (faster there); see acceleration.py
    chunks = []
    for chunk in tqdm(latents.split(chunk_size), desc="decoding", disable=not progress, leave=False):
        chunk = chunk.to(dtype).contiguous(memory_format=layout)
        chunks.append(movq.decode(chunk).float().add(1.0).div(2.0).clamp(0.0, 1.0).contiguous())
    return torch.cat(chunks)


def progress_bar(desc: str, enabled: bool, callback: StepCallback | None = None) -> StepCallback | None:
    """A step callback that also draws a progress bar named ``desc`` (when ``enabled``)."""
    if not enabled:
        return callback
    from tqdm.auto import tqdm

    bar: list[Any] = []

    def report(step: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc=desc, leave=False))
        bar[0].update(1)
        if step >= total:
            bar[0].close()
        if callback is not None:
            callback(step, total)

    return report
