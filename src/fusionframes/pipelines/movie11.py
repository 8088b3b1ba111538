"""Mini-movie scenes made by a Kandinsky Video 1.1 model in text-to-video mode.

Each scene is a 1.1 video (first frame, keyframes conditioned on it, interpolation, the chosen
decoder). With the ``continue`` transition a scene after the first is an image-to-video scene: the
previous scene's last decoded frame is its image condition, so its keyframes grow from that frame
through the channels the model was trained to read it from (no latent replacement during sampling,
which 1.0 movies need for want of such a condition). The scene's own frame 0, the model's drawing of
the condition, is dropped as in 1.0 movies, so the shared frame is shown once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from PIL import Image

from fusionframes.config import ModelConfig
from fusionframes.pipelines.kandinsky11 import (
    GenerationSettings11,
    KandinskyVideo11Pipeline,
    validate_settings_11,
)
from fusionframes.pipelines.text_to_video import ProgressCallback


def scene_settings_11(
    config: ModelConfig,
    prompt: str,
    fps: str,
    num_keyframes: int,
    seed: int | None,
    shared: dict[str, Any],
) -> GenerationSettings11:
    """One scene's 1.1 settings from the movie's shared options (named as for 1.0 scenes:
    ``guidance_scale`` is the keyframes' prompt weight, ``num_inference_steps`` their steps)."""
    if shared.get("scheduler") not in (None, "ddpm"):
        raise ValueError(
            f"scheduler: Kandinsky Video 1.1 samples with its trained DDPM only; allowed: ddpm, "
            f"got {shared['scheduler']!r}"
        )
    options = {
        "fps": fps,
        "width": shared.get("width"),
        "height": shared.get("height"),
        "num_inference_steps": shared.get("num_inference_steps"),
        "interpolation_steps": shared.get("interpolation_steps"),
        "guidance_weight_prompt": shared.get("guidance_scale"),
        "interpolation_guidance_scale": shared.get("interpolation_guidance_scale"),
        "num_keyframes": num_keyframes,
    }
    negative = shared.get("negative_prompt")
    return validate_settings_11(config, prompt, negative, options=options, seed=seed, draw_seed=False)[0]


def frame_image(frame: torch.Tensor) -> Image.Image:
    """A decoded ``[3, H, W]`` frame in [0, 1] as the 8-bit picture a user would have given."""
    array = (frame.permute(1, 2, 0).float().cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array)


def render_scene_11(
    t2v: KandinskyVideo11Pipeline,
    settings: GenerationSettings11,
    previous: torch.Tensor | None,
    generator: torch.Generator,
    callback: ProgressCallback | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, GenerationSettings11]:
    """One scene's frames ``[T, 3, H, W]`` in [0, 1] on the CPU and the settings it was made with;
    ``previous``: the last frame of the scene it continues (its image condition), or None."""
    image = frame_image(previous) if previous is not None else None
    settings = dataclasses.replace(settings, image_to_video=image is not None)
    video = t2v.generate_11(
        settings, image, generator, output_type="pt", callback=callback, progress=progress
    )
    return video.frames, settings


__all__ = ["frame_image", "render_scene_11", "scene_settings_11"]
