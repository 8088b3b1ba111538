"""Kandinsky Video 1.1's image mode as the single-frame model of animations.

A 1.1 model draws the first frame of every video with its keyframe U-Net in image mode (two rows, no
temporal inputs, empty condition channels; :func:`~fusionframes.pipelines.stages11.first_frame_model`)
at twice the video's latent size, decoded and then brought to the video's size. An animation with a 1.1
model draws its first frame and redraws its warped frames that way too, so every frame comes from the
mode the release uses for single pictures and at the scale it uses it: a frame ``[B, 3, H, W]`` is
enlarged to 2H x 2W (bicubic), encoded by the image MoVQ, noised to the timestep where ``strength``
of the 1.1 keyframe sampler's schedule remains, denoised over those last steps, decoded and reduced
back to H x W (bicubic, antialiased). :class:`ImageMode11` offers what
:class:`~fusionframes.pipelines.animation.AnimationPipeline` needs from its image model, with the
same signatures as :class:`~fusionframes.pipelines.img2img.ImageToImagePipeline`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from fusionframes.diffusion.scheduled_ddpm import ScheduledSteps, gaussian
from fusionframes.pipelines.first_frame import movq_inputs
from fusionframes.pipelines.img2img import FrameModel, FrameRequest, fit_image
from fusionframes.pipelines.kandinsky11 import KEYFRAME_SAMPLER_11, KandinskyVideo11Pipeline
from fusionframes.pipelines.stages11 import TextBranches, first_frame_model, sample_11
from fusionframes.runtime import check_finite

IMAGE_MODE_SCALE = 2  # the release samples its first frame at twice the video's latent size


def last_steps(schedule: ScheduledSteps, count: int) -> ScheduledSteps:
    """The final ``count`` steps of ``schedule`` (a redraw starts part-way down)."""
    if not 1 <= count <= len(schedule):
        raise ValueError(f"count: must be in [1, {len(schedule)}], got {count}")
    return dataclasses.replace(
        schedule,
        timesteps=schedule.timesteps[-count:],
        step_alphas=schedule.step_alphas[-count:],
        step_prev_alphas=schedule.step_prev_alphas[-count:],
    )


class ImageMode11(FrameModel):
    """Text-to-image and image-to-image with a loaded :class:`KandinskyVideo11Pipeline`."""

    def __init__(self, t2v: KandinskyVideo11Pipeline) -> None:
        self.t2v = t2v
        self.config = t2v.config
        self.device = t2v.device
        self._prompts: dict[tuple[str, str | None], TextBranches] = {}

    def encode_prompt(self, prompt: str, negative_prompt: str | None = None) -> TextBranches:
        """The keyframe U-Net's text branches, encoded once per (prompt, negative) pair."""
        key = (prompt, negative_prompt)
        if key not in self._prompts:
            self.t2v.warn_unknown_words(prompt)
            request = SimpleNamespace(prompt=prompt, negative_prompt=negative_prompt)
            self._prompts[key] = self.t2v.text_branches(request)[0]  # type: ignore[arg-type]
        return self._prompts[key]

    def encode_all(self, prompts: Iterable[str], negative_prompt: str | None = None) -> None:
        for prompt in prompts:
            self.encode_prompt(prompt, negative_prompt)
        if self.t2v.release_text_encoder:
            self.t2v.text = None

    # -- the image MoVQ at twice the size -------------------------------------------------------------

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """RGB ``[B, 3, H, W]`` in [0, 1] -> latents of the 2H x 2W enlargement (float32)."""
        movq = self.t2v.components.movq
        size = (IMAGE_MODE_SCALE * images.shape[-2], IMAGE_MODE_SCALE * images.shape[-1])
        large = F.interpolate(images.float(), size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        pixels = movq_inputs(movq, large * 2.0 - 1.0, self.t2v.device_for(movq))
        return movq.encode(pixels).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """Latents -> RGB ``[B, 3, height, width]`` in [0, 1] on the CPU, one row at a time (the image
        MoVQ's attention norms read the first row)."""
        movq = self.t2v.components.movq
        rows = []
        for row in latents.split(1):
            decoded = movq.decode(movq_inputs(movq, row, self.t2v.device_for(movq))).float()
            rows.append(fit_image(((decoded + 1.0) / 2.0).clamp(0.0, 1.0).cpu(), width, height))
        return torch.cat(rows)

    def _latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        factor = self.config.movq.scale_factor // IMAGE_MODE_SCALE
        return (self.config.keyframe_unet.out_channels, height // factor, width // factor)

    # -- generation ---------------------------------------------------------------------------------

    def draw(self, request: FrameRequest, width: int, height: int) -> torch.Tensor:
        shape = self._latent_shape(width, height)
        noise = gaussian((1, *shape), request.generator, request.prompt.context.device)
        unet = self.t2v.components.keyframe_unet
        model = first_frame_model(unet, request.prompt, shape[0], request.guidance_scale)
        schedule = KEYFRAME_SAMPLER_11.schedule(request.steps)
        latent = sample_11(model, noise, schedule, request.generator, request.callback)
        return self.decode(check_finite(latent, "text-to-image"), width, height)

    def redraw(self, image: torch.Tensor, request: FrameRequest, count: int) -> torch.Tensor:
        schedule = last_steps(KEYFRAME_SAMPLER_11.schedule(request.steps), count)
        unet, prompt, generator = self.t2v.components.keyframe_unet, request.prompt, request.generator
        out = []
        for row in image.split(1):  # image mode takes one picture (two guidance rows) per call
            latent = self.encode(row).to(prompt.context.device)
            noise = gaussian(tuple(latent.shape), generator, latent.device)
            noisy = schedule.add_noise(latent, noise, int(schedule.timesteps[0]))
            model = first_frame_model(unet, prompt, latent.shape[1], request.guidance_scale)
            redrawn = sample_11(model, noisy, schedule, generator, request.callback)
            out.append(self.decode(check_finite(redrawn, "image-to-image"), row.shape[-1], row.shape[-2]))
        return torch.cat(out)


__all__ = ["IMAGE_MODE_SCALE", "ImageMode11", "last_steps"]
