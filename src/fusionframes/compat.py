"""The official package's entry point, so code written for its README runs after one import change.

from fusionframes import get_T2V_pipeline          # was: from video_kandinsky3 import ...
pipe = get_T2V_pipeline("cuda", fp16=True)
video = pipe("a red car drifting", width=640, height=384, fps="medium")   # list of PIL images
"""

from __future__ import annotations

from pathlib import Path

import torch

from fusionframes.io.checkpoints import load_official, resolve_official_files
from fusionframes.pipelines.text_to_video import TextToVideoPipeline


class OfficialStylePipeline:
    """Callable with the official argument names; returns a list of PIL frames like the original."""

    def __init__(self, pipeline: TextToVideoPipeline) -> None:
        self.pipeline = pipeline

    def __call__(
        self,
        text: str,
        negative_text: str | None = None,
        width: int = 512,
        height: int = 512,
        fps: str = "low",
        guidance_scale: float = 5.0,
        interpolation_guidance_scale: float = 0.25,
        steps: int = 50,
        seed: int | None = None,
    ) -> list:
        return self.pipeline(
            text,
            negative_prompt=negative_text,
            width=width,
            height=height,
            fps=fps,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            interpolation_guidance_scale=interpolation_guidance_scale,
            seed=seed,
            output_type="pil",
        ).frames


def get_T2V_pipeline(  # noqa: N802 - the official name
    device: str | torch.device,
    fp16: bool = True,
    cache_dir: str | Path | None = None,
    unet_path: str | Path | None = None,
    interpolation_unet_path: str | Path | None = None,
    text_encode_path: str | Path | None = None,
    movq_path: str | Path | None = None,
) -> OfficialStylePipeline:
    """Released weights from local paths or the Hub; ``fp16`` picks half precision (bfloat16 where the
    device prefers it, float16 otherwise), like the original flag."""
    files = resolve_official_files(
        unet_path, interpolation_unet_path, movq_path, text_encode_path, cache_dir=cache_dir
    )
    dtype = "auto" if fp16 else "float32"
    pipeline = TextToVideoPipeline(
        load_official(files), device=device, dtype=dtype, release_text_encoder=False
    )
    return OfficialStylePipeline(pipeline)
