"""The official Kandinsky Video 1.1 call shape, for code written against its README.

Replace ``from kandinsky_video import get_T2V_pipeline`` with
``from fusionframes.kandinsky_video import get_T2V_pipeline`` and the rest runs unchanged::

    t2v_pipe = get_T2V_pipeline("cuda:0")            # or {"unet": ..., "interpolation_unet": ...,
    video = t2v_pipe(prompt, image=img, width=640,   #     "text_encoder": ..., "movq": ...}
                     height=384, fps="medium", motion="high")
    video[0].save("video.gif", save_all=True, append_images=video[1:])

The call returns the list of PIL frames, as the reference does; the FusionFrames pipeline behind it
(``t2v_pipe.pipeline``) returns a :class:`~fusionframes.pipelines.VideoOutput` with the settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fusionframes.pipelines.kandinsky11 import (
    RELEASE,
    KandinskyVideo11Pipeline,
    is_kandinsky_11,
    load_release_or_folder,
)
from fusionframes.runtime import resolve_device

DEVICE_MAP_KEYS = ("unet", "interpolation_unet", "text_encoder", "movq")


def resolve_device_map(device_map: Any) -> dict[str, torch.device]:
    """One device for every component, or the reference's dict with one device per component."""
    if isinstance(device_map, dict):
        unknown = sorted(set(device_map) - set(DEVICE_MAP_KEYS))
        missing = sorted(set(DEVICE_MAP_KEYS) - set(device_map))
        if unknown or missing:
            raise ValueError(
                f"device_map: needs exactly the keys {', '.join(DEVICE_MAP_KEYS)} "
                f"(unknown: {unknown or 'none'}, missing: {missing or 'none'})"
            )
        return {key: resolve_device(device_map[key]) for key in DEVICE_MAP_KEYS}
    if not isinstance(device_map, (str, torch.device)):
        keys = ", ".join(DEVICE_MAP_KEYS)
        raise ValueError(f"device_map: a device or a dict of {keys}, got {device_map!r}")
    device = resolve_device(device_map)
    return dict.fromkeys(DEVICE_MAP_KEYS, device)


class KandinskyVideoT2VPipeline:
    """The reference's pipeline object: called with its arguments, returns a list of PIL frames."""

    def __init__(self, pipeline: KandinskyVideo11Pipeline) -> None:
        self.pipeline = pipeline

    def __call__(
        self, prompt: str, negative_prompt: str | None = None, image: Any = None, **kwargs: Any
    ) -> list:
        return self.pipeline(prompt, negative_prompt, image, output_type="pil", **kwargs).frames


def get_T2V_pipeline(  # noqa: N802 - the reference's name
    device_map: Any,
    cache_dir: str | Path = "/tmp/kandinsky_video/",
    model: str | Path = RELEASE,
    dtype: str = "auto",
    text_encoder: str | Path | None = None,
) -> KandinskyVideoT2VPipeline:
    """Load Kandinsky Video 1.1 placed by ``device_map``. ``model``: the Hub release (default), a folder
    of the released files, or a FusionFrames model folder; ``text_encoder``: another T5 folder or Hub
    id than the release's ``google/flan-ul2``; ``dtype``: auto picks float16 / bfloat16 on GPUs (the
    reference runs its U-Nets in float16) and the fastest exact choice on CPUs."""
    devices = resolve_device_map(device_map)
    components = load_release_or_folder(model, cache_dir, text_encoder)
    if not is_kandinsky_11(components.config):
        raise ValueError(
            f"model: {str(model)!r} is not a Kandinsky Video 1.1 model; get_T2V_pipeline needs 1.1"
        )
    pipeline = KandinskyVideo11Pipeline(components, device=devices["unet"], dtype=dtype)
    moves = {"interpolation_unet": [components.interpolation_unet], "movq": [components.movq]}
    if components.video_movq is not None:
        moves["movq"].append(components.video_movq)
    for key, modules in moves.items():
        for module in modules:
            module.to(devices[key])
    pipeline.text_device = devices["text_encoder"]
    return KandinskyVideoT2VPipeline(pipeline)
