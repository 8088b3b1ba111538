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

from fusionframes.io.official_kv11 import load_release_or_folder
from fusionframes.pipelines.kandinsky11 import RELEASE, KandinskyVideo11Pipeline, is_kandinsky_11
from fusionframes.pipelines.text_to_video import check_load_options
from fusionframes.runtime import resolve_device

DEVICE_MAP_KEYS = ("unet", "interpolation_unet", "text_encoder", "movq")
# The reference ``KandinskyVideoT2VPipeline.__call__``'s arguments after the prompt, in its order.
REFERENCE_ARGUMENTS = (
    "negative_prompt",
    "image",
    "width",
    "height",
    "fps",
    "motion",
    "key_frame_guidance_scale",
    "guidance_weight_prompt",
    "guidance_weight_image",
    "interpolation_guidance_scale",
    "noise_augmentation",
)


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

    def __call__(self, prompt: str, *args: Any, **options: Any) -> list:
        """The reference's arguments, positionally in its order (:data:`REFERENCE_ARGUMENTS`) or by
        name; ``options`` may also hold the FusionFrames pipeline's others (``seed``, ``decoder``,
        ``num_inference_steps``, ...). Unset arguments take the reference's defaults."""
        if len(args) > len(REFERENCE_ARGUMENTS):
            raise TypeError(f"takes at most {len(REFERENCE_ARGUMENTS) + 1} positional arguments")
        named = dict(zip(REFERENCE_ARGUMENTS, args, strict=False))
        twice = sorted(set(named) & set(options))
        if twice:
            raise TypeError(f"got multiple values for {twice}")
        return self.pipeline(prompt, **named, **options, output_type="pil").frames


def get_T2V_pipeline(  # noqa: N802 - the reference's name
    device_map: Any,
    cache_dir: str | Path = "/tmp/kandinsky_video/",
    model: str | Path = RELEASE,
    dtype: str = "auto",
    text_encoder: str | Path | None = None,
    decoder_dtype: str = "float32",
    **options: Any,
) -> KandinskyVideoT2VPipeline:
    """Load Kandinsky Video 1.1 placed by ``device_map``. ``model``: the Hub release (default), a folder
    of the released files, or a FusionFrames model folder; ``text_encoder``: another T5 folder or Hub
    id than the release's ``google/flan-ul2``; ``dtype``: auto picks float16 / bfloat16 on GPUs (the
    reference runs its U-Nets in float16) and the fastest exact choice on CPUs; ``decoder_dtype``:
    the MoVQs' precision, float32 as in the reference's ``dtype_map``; ``options``: the pipeline's
    memory and speed options (``text_quantization``, ``split_branches``, ``channels_last``, and with
    one device ``offload`` / ``compile``)."""
    devices = resolve_device_map(device_map)
    options["decoder_dtype"] = decoder_dtype
    check_load_options(devices["unet"], dtype, options)
    if options.get("offload", "none") != "none" and len(set(devices.values())) > 1:
        raise ValueError("offload: moves every network to one device; pass one device as device_map")
    components = load_release_or_folder(model, cache_dir, text_encoder)
    if not is_kandinsky_11(components.config):
        raise ValueError(
            f"model: {str(model)!r} is not a Kandinsky Video 1.1 model; get_T2V_pipeline needs 1.1 "
            "(for 1.0: fusionframes.get_T2V_pipeline or TextToVideoPipeline.from_pretrained)"
        )
    pipeline = KandinskyVideo11Pipeline(components, device=devices["unet"], dtype=dtype, **options)
    moves = {"interpolation_unet": [components.interpolation_unet], "movq": [components.movq]}
    if components.video_movq is not None:
        moves["movq"].append(components.video_movq)
    for key, modules in moves.items():
        for module in modules:
            module.to(devices[key])
    pipeline.text_device = devices["text_encoder"]
    return KandinskyVideoT2VPipeline(pipeline)
