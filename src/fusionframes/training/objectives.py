"""Training objectives as modules, so DDP/FSDP wrap exactly what is trained.

Each ``forward(batch, generator)`` returns a scalar loss. The diffusion objectives use the same
cosine schedule and time scaling as inference, so a trained model samples with the unchanged pipeline.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from fusionframes.diffusion.sampling import mix_shared_noise
from fusionframes.diffusion.schedule import DiffusionSchedule
from fusionframes.models import MoVQ, UNet3D
from fusionframes.pipelines.stages import blend_neighbours, temporal_positions
from fusionframes.text.conditioning import TextProjection, project_text

if TYPE_CHECKING:
    from fusionframes.training.config import TrainConfig


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device="cpu").to(device)


def _normal(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device="cpu").to(device)


def _timesteps(n: int, steps: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(0, steps, (n,), generator=generator, device="cpu").to(device)


def signal_to_noise(schedule: DiffusionSchedule, t: torch.Tensor) -> torch.Tensor:
    """alpha_bar / (1 - alpha_bar) at timesteps ``t``, in float64 (it spans about 1e-9 to 1e4)."""
    acp = schedule.alphas_cumprod.to(t.device)[t].double()
    return acp / (1.0 - acp)


def min_snr_epsilon_weights(schedule: DiffusionSchedule, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023) for an epsilon loss: ``min(SNR, gamma) / SNR``.

    An epsilon loss implicitly weights the x0 error by the SNR, so nearly clean timesteps dominate the
    gradient while the noisy ones, where colour, layout and motion are decided, barely train. Capping
    the weight at ``gamma`` rebalances the two without changing what the network predicts.
    """
    snr = signal_to_noise(schedule, t)
    return (snr.clamp(max=gamma) / snr).float()


def noisy_epsilon_weights(schedule: DiffusionSchedule, t: torch.Tensor, cap: float) -> torch.Tensor:
    """Epsilon-loss weights ``clamp(1 / SNR, 1, cap)``: the x0 error of noisy timesteps counts as at SNR 1.

    Below SNR 1 the noisy input barely shows the objects, so only the text can say where they go next
    (motion direction); a plain epsilon loss scales those x0 errors down by the SNR. ``cap`` bounds the
    weight near pure noise, where 1 / SNR grows without limit.
    """
    return (1.0 / signal_to_noise(schedule, t)).clamp(1.0, cap).float()


def object_weights(frames: torch.Tensor, weight: float, threshold: float = 0.1) -> torch.Tensor:
    """Per-pixel loss weights ``[B, 1, H, W]`` of frames ``[B, 3, H, W]`` in [-1, 1]: ``1 + weight`` on
    pixels whose colour is off their row's median (the background of a plain or row-gradient frame) by
    more than ``threshold`` (summed over channels), grown by two pixels to take in anti-aliased rims;
    1 elsewhere."""
    background = frames.median(dim=-1, keepdim=True).values
    on_object = ((frames - background).abs().sum(1, keepdim=True) > threshold).float()
    grown = F.max_pool2d(on_object, kernel_size=5, stride=1, padding=2)
    return 1.0 + weight * grown


class MoVQObjective(nn.Module):
    """Reconstruction (L1 + MSE) of single frames, optionally weighted towards the pixels on and around
    objects (:func:`object_weights`); a small penalty keeps latents near unit scale."""

    def __init__(self, movq: MoVQ, latent_weight: float = 0.01, object_weight: float = 0.0) -> None:
        super().__init__()
        self.movq = movq
        self.latent_weight = latent_weight
        self.object_weight = object_weight

    def forward(self, frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        frozen = not any(p.requires_grad for p in self.movq.encoder.parameters())
        with torch.no_grad() if frozen else nullcontext():
            latents = self.movq.encode(frames)
        recon = self.movq.decode(latents).float()
        target = frames.float()
        scale = latents.float().pow(2).mean()
        penalty = self.latent_weight * (scale - 1.0) ** 2
        if not self.object_weight:
            return F.l1_loss(recon, target) + F.mse_loss(recon, target) + penalty
        error = recon - target
        weights = object_weights(target, self.object_weight)
        per_pixel = (error.abs() + error.pow(2)).mean(1, keepdim=True)
        return (weights * per_pixel).sum() / weights.sum() + penalty


class TextEncoding(nn.Module):
    """T5 encoder + projection + null embedding; trainable for the small built-in encoder."""

    def __init__(self, encoder: nn.Module | None, projection: TextProjection, null: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.projection = projection
        self.null_embedding = nn.Parameter(null.clone().float())

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return project_text(self.projection, hidden.float(), attention_mask)

    def drop(
        self, context: torch.Tensor, mask: torch.Tensor, drop: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace the rows flagged in ``drop`` by the null context (what the unconditional branch sees)."""
        null = torch.zeros_like(context)
        null[:, 0] = self.null_embedding.to(context.dtype)
        null_mask = torch.zeros_like(mask)
        null_mask[:, 0] = 1
        keep = ~drop
        context = torch.where(keep[:, None, None], context, null)
        mask = torch.where(keep[:, None], mask, null_mask)
        return context, mask


def keyframe_options(cfg: TrainConfig) -> dict[str, Any]:
    """:class:`KeyframeObjective`'s options from a training config (after the U-Net and text)."""
    return {
        "steps": cfg.diffusion_steps,
        "text_dropout": cfg.text_dropout,
        "noise_sharing": cfg.frame_noise_sharing,
        "snr_gamma": cfg.snr_gamma,
        "noisy_weight_max": cfg.noisy_weight_max,
    }


class KeyframeObjective(nn.Module):
    """Epsilon prediction on F keyframe latents per video, with text dropout to the null embedding.

    ``noise_sharing``: the share of the noise variance common to a video's frames (see
    :func:`fusionframes.diffusion.sampling.video_noise`); sampling must use the same value.
    ``snr_gamma``: weight each video's loss by :func:`min_snr_epsilon_weights` (None = plain mean).
    ``noisy_weight_max``: also weight it by :func:`noisy_epsilon_weights` (None = off).
    """

    trains_text = True  # whether gradients reach the text encoding (its projection, null embedding)

    def __init__(
        self,
        unet: UNet3D,
        text: TextEncoding,
        steps: int,
        text_dropout: float,
        noise_sharing: float = 0.0,
        snr_gamma: float | None = None,
        noisy_weight_max: float | None = None,
    ) -> None:
        super().__init__()
        self.unet = unet
        self.text = text
        self.schedule = DiffusionSchedule.cosine(steps)
        self.text_dropout = text_dropout
        self.noise_sharing = noise_sharing
        self.snr_gamma = snr_gamma
        self.noisy_weight_max = noisy_weight_max

    def forward(
        self,
        latents: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """``latents`` ``[B, F, C, h, w]``; token ids ``[B, L]``."""
        b = latents.shape[0]
        with nullcontext() if self.trains_text else torch.no_grad():
            context, mask = self.text(input_ids, attention_mask)
        dropped = _uniform(b, generator, latents.device) < self.text_dropout
        context, mask = self.text.drop(context, mask, dropped)
        return self.denoising_loss(latents, context, mask, generator)

    def denoising_loss(
        self, latents: torch.Tensor, context: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """The loss of the text-conditioned latents (what a subclass adds conditions to)."""
        b, f = latents.shape[:2]
        t, noise, x_t = self.noised(latents, generator)
        # One memory layout whatever the latents arrived in (a batch can come out channels-last): the CPU
        # kernels round differently per layout, and runs must replay bit for bit
        out = self.unet(x_t.contiguous(), *self.unet_inputs(t, context, mask, f), num_frames=f)
        return self.weighted_loss(out, noise, t, b)

    def noised(
        self, latents: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-video timesteps ``t`` ``[B]``, the noise ``[B * F, C, h, w]`` (a share common to each
        video's frames: the same mix as sampling's video_noise, one common draw per video) and the
        noised latents x_t, drawn in this order from ``generator`` (the image-to-video stage's too)."""
        b, f = latents.shape[:2]
        device = latents.device
        t = _timesteps(b, self.schedule.num_steps, generator, device)
        noise = _normal(tuple(latents.shape), generator, device)
        if self.noise_sharing > 0:
            common = _normal((b, 1, *latents.shape[2:]), generator, device)
            noise = mix_shared_noise(noise, common, self.noise_sharing)
        noise = noise.flatten(0, 1)
        return t, noise, self.schedule.add_noise(latents.flatten(0, 1), noise, t.repeat_interleave(f))

    def unet_inputs(
        self, t: torch.Tensor, context: torch.Tensor, mask: torch.Tensor, num_frames: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The U-Net's time, text and frame-position inputs for B videos of ``num_frames`` rows each,
        from per-video timesteps ``t`` and text ``[B, L, D]``."""
        f = num_frames
        return (
            t.repeat_interleave(f) * self.schedule.time_scale,
            context.repeat_interleave(f, 0),
            mask.repeat_interleave(f, 0).bool(),
            temporal_positions(f, t.device).repeat(t.shape[0]),
        )

    def weighted_loss(self, out: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, b: int) -> torch.Tensor:
        """The epsilon loss of the U-Net's output ``out`` for rows noised with ``noise`` at the per-video
        timesteps ``t``, weighted per video as configured (also the image-to-video stage's)."""
        per_video = (out.float() - noise).pow(2).reshape(b, -1).mean(1)
        weights = torch.ones_like(per_video)
        if self.snr_gamma is not None:
            weights = weights * min_snr_epsilon_weights(self.schedule, t, self.snr_gamma)
        if self.noisy_weight_max is not None:
            weights = weights * noisy_epsilon_weights(self.schedule, t, self.noisy_weight_max)
        return (per_video * weights).mean()


class InterpolationObjective(nn.Module):
    """v-prediction of the three middle latents of (left, 3 middle, right) groups.

    The groups of one clip are consecutive rows so the temporal convolutions see their neighbours,
    exactly as at inference; conditioning is the null text, and the neighbouring keyframes are
    zeroed with probability ``keyframe_dropout`` (the unconditional branch of guidance).
    ``residual``: the target is the middle latents minus the linear blend of the (true) neighbours;
    ``prediction``: the network outputs v (as released) or that target itself (``"sample"``).
    """

    def __init__(
        self,
        unet: UNet3D,
        null: torch.Tensor,
        steps: int,
        keyframe_dropout: float,
        residual: bool = False,
        prediction: str = "v",
    ) -> None:
        super().__init__()
        self.unet = unet
        self.null_embedding = nn.Parameter(null.clone().float())
        self.schedule = DiffusionSchedule.cosine(steps)
        self.keyframe_dropout = keyframe_dropout
        self.residual = residual
        self.prediction = prediction

    def forward(self, groups: torch.Tensor, skip_frames: int, generator: torch.Generator) -> torch.Tensor:
        """``groups`` ``[B, G, 5, C, h, w]``: B clips, G consecutive groups each."""
        b, g, _, c, h, w = groups.shape
        device = groups.device
        rows = groups.reshape(b * g, 5, c, h, w)
        left, middle, right = rows[:, 0], rows[:, 1:4].reshape(b * g, 3 * c, h, w), rows[:, 4]
        if self.residual:
            middle = middle - blend_neighbours(left, right)
        drop = (_uniform(b, generator, device) < self.keyframe_dropout).repeat_interleave(g)
        left = torch.where(drop[:, None, None, None], torch.zeros_like(left), left)
        right = torch.where(drop[:, None, None, None], torch.zeros_like(right), right)
        t = _timesteps(b, self.schedule.num_steps, generator, device).repeat_interleave(g)
        noise = _normal(tuple(middle.shape), generator, device)
        x_t = self.schedule.add_noise(middle, noise, t)
        context = torch.zeros(b * g, 2, self.null_embedding.shape[0], device=device)
        context = context + F.pad(self.null_embedding[None, None], (0, 0, 0, 1))
        mask = torch.zeros(b * g, 2, dtype=torch.bool, device=device)
        mask[:, 0] = True
        out = self.unet(
            torch.cat([left, x_t, right], dim=1),
            t * self.schedule.time_scale,
            context,
            mask,
            skip_frames=torch.full((b * g,), skip_frames, dtype=torch.int32, device=device),
            num_temporal_groups=g,
        )
        target = middle if self.prediction == "sample" else self.schedule.velocity(middle, noise, t)
        return F.mse_loss(out.float(), target)
