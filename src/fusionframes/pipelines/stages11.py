"""The Kandinsky Video 1.1 stages: first frame, keyframes on the first frame, interpolation passes.

Each stage lays out the network rows as the reference sampler does (its ``BaseDiffusion``), wraps the
network into a guided model (:mod:`fusionframes.diffusion.guidance`), lets the 1.1 parameterisation
(diffusers' DDPM schedule, :class:`~fusionframes.diffusion.parameterisation.ScheduledParameterisation`)
turn it into a denoiser and runs the one ancestral loop
(:func:`fusionframes.diffusion.sampling.sample_ddpm`). Noise is drawn from the caller's
generator in the reference's order: the initial latent, then (keyframes) the uniform noise of the
first-frame augmentation, then one Gaussian per step whose timestep is above 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fusionframes.diffusion.guidance import Model, guided, text_image
from fusionframes.diffusion.parameterisation import ScheduledParameterisation
from fusionframes.diffusion.sampling import StepCallback, sample_ddpm
from fusionframes.diffusion.scheduled_ddpm import ScheduledSteps, uniform
from fusionframes.pipelines.stages import TextBranches


def sample_11(
    model: Model,
    x: torch.Tensor,
    schedule: ScheduledSteps,
    generator: torch.Generator | None,
    callback: StepCallback | None,
) -> torch.Tensor:
    """The one ancestral loop with the 1.1 parameterisation of ``schedule``'s settings."""
    denoise = ScheduledParameterisation(schedule.settings).denoiser(model, schedule)
    return sample_ddpm(denoise, schedule.start(x), schedule, generator, callback)


@dataclass(frozen=True)
class KeyframeControls:
    """What steers the keyframes besides the text: the guidance weights, motion and augmentation."""

    prompt_weight: float = 5.0
    image_weight: float = 2.0
    motion_score: float = 10
    noise_augmentation: int = 20


def _dtype(network: nn.Module) -> torch.dtype:
    return next(network.parameters()).dtype


def score_tensor(value: float, rows: int, device: torch.device) -> torch.Tensor:
    """A per-row score as the reference passes it: int32 for whole numbers, float32 otherwise."""
    dtype = torch.int32 if float(value).is_integer() else torch.float32
    return torch.full((rows,), value, dtype=dtype, device=device)


def first_frame_model(
    unet: nn.Module, text: TextBranches, latent_channels: int, guidance_weight: float
) -> Model:
    """Guided model of the first frame in the keyframe U-Net's image mode: two rows (it switches to
    its image input layer at two rows or fewer), no temporal inputs, zeros in the condition and mask
    channels; ``(w + 1) * cond - w * uncond``."""
    dtype = _dtype(unet)
    context, mask = text.rows("cu", 1, dtype)

    def run_all(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        empty = torch.zeros(2, latent_channels + 1, *x.shape[2:], device=x.device)
        rows = torch.cat([x.repeat(2, 1, 1, 1), empty], dim=1).to(dtype)
        return unet(rows, time.repeat(2).to(dtype), context, mask)

    return guided(run_all, guidance_weight)


def generate_first_frame(
    unet: nn.Module,
    text: TextBranches,
    latent_shape: tuple[int, int, int],
    guidance_weight: float,
    schedule: ScheduledSteps,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """The first frame ``[1, C, h, w]`` from pure noise (see :func:`first_frame_model`)."""
    x = schedule.noise((1, *latent_shape), generator, text.context.device)
    model = first_frame_model(unet, text, latent_shape[0], guidance_weight)
    return sample_11(model, x, schedule, generator, callback)


def keyframe_model_11(
    unet: nn.Module,
    text: TextBranches,
    noised_first: torch.Tensor,
    num_frames: int,
    controls: KeyframeControls,
) -> Model:
    """Guided model of N keyframes conditioned on the (already noised) first-frame latent
    ``[C, h, w]``: three blocks of N rows (prompt + image, unconditional text + image, unconditional
    text and no image), combined with :func:`~fusionframes.diffusion.guidance.text_image`."""
    device = text.context.device
    dtype = _dtype(unet)
    condition = torch.zeros(num_frames, *noised_first.shape, device=device)
    condition[0] = noised_first
    mask = torch.zeros(num_frames, 1, *noised_first.shape[1:], device=device)
    mask[0] = 1
    with_image = torch.cat([condition, mask], dim=1)
    extra = torch.cat([with_image, with_image, torch.zeros_like(with_image)])  # channels after the latent
    context, context_mask = text.rows("cuu", num_frames, dtype)
    frames = torch.arange(num_frames, device=device).repeat(3).to(dtype)
    noise_level = score_tensor(controls.noise_augmentation, 3 * num_frames, device)
    motion = score_tensor(controls.motion_score, 3 * num_frames, device)

    def run_all(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([x.repeat(3, 1, 1, 1), extra], dim=1).to(dtype)
        return unet(
            rows,
            time.repeat(3).to(dtype),
            context,
            context_mask,
            temporal_positions=frames,
            num_frames=num_frames,
            noise_aug_time=noise_level,
            motion_score=motion,
        )

    return guided(run_all, text_image(controls.prompt_weight, controls.image_weight))


def generate_keyframes_11(
    unet: nn.Module,
    text: TextBranches,
    first_frame: torch.Tensor,
    num_frames: int,
    controls: KeyframeControls,
    schedule: ScheduledSteps,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """``num_frames`` keyframe latents ``[N, C, h, w]`` whose frame 0 is conditioned on ``first_frame``
    ``[C, h, w]``, noise-augmented to ``controls.noise_augmentation`` with uniform noise drawn right
    after the initial latent (as released)."""
    device = text.context.device
    x = schedule.noise((num_frames, *first_frame.shape), generator, device)
    augmentation = uniform(tuple(first_frame.shape), generator, device)
    noised = schedule.add_noise(first_frame.float().to(device), augmentation, controls.noise_augmentation)
    model = keyframe_model_11(unet, text, noised, num_frames, controls)
    return sample_11(model, x, schedule, generator, callback)


def interpolation_model_11(
    unet: nn.Module, text: TextBranches, frames: torch.Tensor, skip_frames: int, guidance_weight: float
) -> Model:
    """Guided model of the in-betweens of each neighbouring pair of ``frames`` ``[N, C, h, w]``.

    The unconditional half sees the unconditional text, zero keyframes and a temporal mask of 0 (no
    temporal mixing across its groups); the perturbation time is 0 as in the released sampler.
    """
    device = frames.device
    dtype = _dtype(unet)
    groups = frames.shape[0] - 1
    left, right = frames[:-1].float(), frames[1:].float()
    both_left = torch.cat([left, torch.zeros_like(left)])
    both_right = torch.cat([right, torch.zeros_like(right)])
    context, context_mask = text.rows("cu", groups, dtype)
    skips = torch.full((2 * groups,), skip_frames, dtype=torch.int32, device=device)
    perturbation = torch.zeros(2 * groups, dtype=torch.int32, device=device)
    temporal_mask = torch.cat([torch.ones(groups, device=device), torch.zeros(groups, device=device)])

    def run_all(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([both_left, x.repeat(2, 1, 1, 1), both_right], dim=1).to(dtype)
        return unet(
            rows,
            time.repeat(2),
            context,
            context_mask,
            num_temporal_groups=groups,
            perturbation_time=perturbation,
            skip_frames=skips,
            temporal_mask=temporal_mask.to(dtype),
        )

    return guided(run_all, guidance_weight)


def interpolate_groups_11(
    unet: nn.Module,
    text: TextBranches,
    frames: torch.Tensor,
    skip_frames: int,
    guidance_weight: float,
    schedule: ScheduledSteps,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Three in-between latents for each neighbouring pair of ``frames``: ``[N - 1, 3C, h, w]``."""
    c, h, w = frames.shape[1:]
    x = schedule.noise((frames.shape[0] - 1, 3 * c, h, w), generator, frames.device)
    model = interpolation_model_11(unet, text, frames, skip_frames, guidance_weight)
    return sample_11(model, x, schedule, generator, callback)
