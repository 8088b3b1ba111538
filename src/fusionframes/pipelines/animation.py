"""Animation mode: a virtual camera moving through a picture that the model keeps redrawing.

Frame 0 is the init image, or one frame made from the prompt. ``motions[t]`` turns frame ``t - 1``
into frame ``t`` (``motions[0]`` is never applied). Every K-th frame (``cadence`` K) is made by

    warp the previous redrawn frame by the moves since -> match its colours to frame 0
    -> add a little fresh grain -> redraw it with the prompt at ``strength`` (image-to-image)

and the K - 1 frames between two redraws come from :func:`fusionframes.camera.blend_cadence`. A
frame whose strength is 0 is not redrawn, so it is the pure camera warp (no colour matching, no
grain): a strength-0 animation is exactly the camera path applied to the init image.

Everything is validated by :func:`validate_animation` before any model is loaded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

import torch

from fusionframes.camera import (
    DEFAULT_FOV_DEG,
    CameraMotion,
    add_noise,
    blend_cadence,
    chain_source_coords,
    match_colours,
    sample,
    warp,
)
from fusionframes.camera.warp import prepare_depth
from fusionframes.components import ModelComponents
from fusionframes.lora.pipeline import LoraMixin
from fusionframes.pipelines.animation_plan import (
    DEFAULT_BORDER,
    DEFAULT_CADENCE,
    DEFAULT_COLOUR,
    DEFAULT_FPS,
    DEFAULT_MOTION,
    DEFAULT_NOISE,
    DEFAULT_REDRAW_STEPS,
    DEFAULT_SECONDS,
    DEFAULT_STRENGTH,
    MAX_SECONDS,
    AnimationPlan,
    ImageLike,
    PromptLike,
    count_frames,
    frame_count,
    resolve_motion,
    validate_animation,
    with_image,
)
from fusionframes.pipelines.img2img import ImageToImagePipeline
from fusionframes.pipelines.outputs import Delivery, PlayableOutput, delivered, split_delivery
from fusionframes.pipelines.text_to_video import (
    ProgressCallback,
    TextToVideoPipeline,
    to_output_type,
)

MIN_DEPTH = 0.05  # a warped depth map is kept this far in front of the camera


# ------------------------------------------------------------------------------------------------ frames


def warp_chain(
    image: torch.Tensor,
    motions: Sequence[CameraMotion],
    *,
    depth: torch.Tensor | None = None,
    border: str = DEFAULT_BORDER,
    fov_deg: float = DEFAULT_FOV_DEG,
) -> torch.Tensor:
    """Carry a frame through several moves with one resampling; one move is exactly ``camera.warp``."""
    if len(motions) == 1:
        return warp(image, motions[0], depth=depth, fov_deg=fov_deg, border=border)
    h, w = image.shape[-2:]
    d = prepare_depth(depth, image) if depth is not None else None
    coords = chain_source_coords(motions, h, w, depth=d, fov_deg=fov_deg, device=image.device)
    return sample(image, coords, border=border)


def advance_depth(
    depth: torch.Tensor | None, motions: Sequence[CameraMotion], fov_deg: float = DEFAULT_FOV_DEG
) -> torch.Tensor | None:
    """Move the depth map with the picture (a dolly also brings everything ``tz`` closer).

    There is no depth estimator in the loop, so the first frame's map travels with the camera; newly
    uncovered borders repeat the edge depth.
    """
    if depth is None:
        return None
    for motion in motions:
        moved = warp(
            depth, motion, depth=depth, fov_deg=fov_deg, border="replicate", interpolation="bilinear"
        )
        depth = (moved - motion.tz).clamp_min(MIN_DEPTH)
    return depth


def segments(num_frames: int, cadence: int) -> list[tuple[int, int, bool]]:
    """``(start, end, redraw)`` spans covering frames 1..N-1: every ``cadence``-th frame ends a redrawn
    span; a shorter tail after the last one is only warped (it has no later redraw to blend with)."""
    spans = []
    start = 0
    while start < num_frames - 1:
        end = min(start + cadence, num_frames - 1)
        spans.append((start, end, end - start == cadence))
        start = end
    return spans


@dataclass
class AnimationOutput(PlayableOutput):
    """Frames plus what is needed to play and reproduce them (like ``VideoOutput``)."""

    frames: Any  # list[PIL.Image] | np.ndarray [T, H, W, 3] uint8 | torch.Tensor [T, 3, H, W] in [0, 1]
    fps: float
    settings: dict[str, Any]
    keyframe_indices: list[int]  # frames the model drew: 0 when made from text, then the redraws
    timings: dict[str, float] = field(default_factory=dict)


class AnimationPipeline(LoraMixin):
    """Camera animation with the keyframe U-Net of a text-to-video model (see module docstring)."""

    def __init__(self, t2v: TextToVideoPipeline) -> None:
        from fusionframes.pipelines.kandinsky11 import KandinskyVideo11Pipeline

        self.t2v = t2v
        # a 1.1 model draws and redraws in the image mode its videos' first frames come from
        if isinstance(t2v, KandinskyVideo11Pipeline):
            from fusionframes.pipelines.image_mode11 import ImageMode11

            self.images: ImageToImagePipeline | ImageMode11 = ImageMode11(t2v)
        else:
            self.images = ImageToImagePipeline(t2v)
        self.config = t2v.config
        self.device = t2v.device

    @property
    def lora_components(self) -> ModelComponents:
        """Adapters go on the text-to-video pipeline's networks, which this one samples with."""
        return self.t2v.components

    @classmethod
    def from_pretrained(cls, model: str | Path | None = None, **kwargs: Any) -> AnimationPipeline:
        """``model``: None/"builtin", "kandinsky-video-1.0", or a model folder; ``kwargs``: the device,
        precision and memory options of :meth:`TextToVideoPipeline.from_pretrained`."""
        return cls(TextToVideoPipeline.from_pretrained(model, **kwargs))

    def __call__(self, prompt: PromptLike, image: ImageLike | None = None, **options: Any) -> AnimationOutput:
        """Render one animation; ``options`` are those of :func:`validate_animation` (motion, seconds,
        fps, size, strength, cadence, ...). ``generator`` wins over ``seed``; with neither a seed is
        drawn and recorded in ``output.settings['seed']``. ``output_type``, ``callback`` and
        ``progress``: see :class:`~.outputs.Delivery`."""
        generator: torch.Generator | None = options.pop("generator", None)
        delivery = split_delivery(options)
        plan = validate_animation(self.config, prompt, image, draw_seed=generator is None, **options)
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(plan.seed)
        return self.render(plan, generator, **delivery)

    # -- the frame loop ---------------------------------------------------------------------------

    def first_frame(
        self, plan: AnimationPlan, generator: torch.Generator, callback: ProgressCallback | None = None
    ) -> torch.Tensor:
        """The init image, or one frame made from the prompt at frame 0."""
        if plan.image is not None:
            return plan.image.to(self.device)
        embedding = self.images.encode_prompt(plan.prompt_at(0), plan.negative_prompt)
        report = (lambda step, total: callback("first frame", step, total)) if callback else None
        return self.images.text_to_image(
            embedding, plan.width, plan.height, plan.first_frame_steps, plan.guidance_scale, generator, report
        ).to(self.device)

    def redraw(
        self,
        warped: torch.Tensor,
        frame: int,
        plan: AnimationPlan,
        reference: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Colour-match, grain and redraw a warped frame at its strength (strength 0: the warp itself)."""
        strength = plan.strengths[frame]
        if strength == 0.0:
            return warped
        x = match_colours(warped, reference, plan.colour_coherence) if plan.colour_coherence else warped
        if plan.noise > 0:
            x = add_noise(x.cpu(), plan.noise, generator).to(warped.device)
        embedding = self.images.encode_prompt(plan.prompt_at(frame), plan.negative_prompt)
        out = self.images.image_to_image(x, embedding, strength, plan.steps, plan.guidance_scale, generator)
        return out.to(warped.device)

    @torch.no_grad()
    def render(
        self, plan: AnimationPlan, generator: torch.Generator, **delivery: Unpack[Delivery]
    ) -> AnimationOutput:
        """Run a validated plan: first frame, then warp/redraw spans with cadence in-betweens."""
        from tqdm.auto import tqdm

        output_type, callback, progress = delivered(delivery)
        timings: dict[str, float] = {}
        start_time = time.perf_counter()
        if plan.image is None or plan.redraw_frames():
            self.images.encode_all([prompt for _, prompt in plan.prompts], plan.negative_prompt)
        frames = [self.first_frame(plan, generator, callback)]
        timings["first_frame"] = time.perf_counter() - start_time
        drawn = [0] if plan.image is None else []
        depth = plan.depth.to(self.device) if plan.depth is not None else None
        options = {"border": plan.border, "fov_deg": plan.fov_deg}
        loop_start = time.perf_counter()
        with tqdm(
            total=plan.num_frames, desc="frames", unit="frame", disable=not progress, leave=False
        ) as bar:
            bar.update(1)
            if callback is not None:
                callback("frames", 1, plan.num_frames)
            for start, end, redraw in segments(plan.num_frames, plan.cadence):
                moves = plan.motions[start + 1 : end + 1]
                if redraw:
                    warped = warp_chain(frames[start], moves, depth=depth, **options)
                    key = self.redraw(warped, end, plan, frames[0], generator)
                    if plan.strengths[end] > 0:
                        drawn.append(end)
                    if len(moves) > 1:
                        frames += blend_cadence(frames[start], key, moves, depth=depth, **options)
                    frames.append(key)
                else:
                    frames += [
                        warp_chain(frames[start], moves[:m], depth=depth, **options)
                        for m in range(1, len(moves) + 1)
                    ]
                depth = advance_depth(depth, moves, plan.fov_deg)
                bar.update(end - start)
                if callback is not None:
                    callback("frames", end + 1, plan.num_frames)
        timings["frames"] = time.perf_counter() - loop_start
        timings["total"] = time.perf_counter() - start_time
        timings["per_frame"] = timings["total"] / plan.num_frames
        video = torch.cat(frames).float().clamp(0.0, 1.0)
        return AnimationOutput(
            frames=to_output_type(video, output_type),
            fps=plan.fps,
            settings={**plan.settings(), "model": self.t2v.components.name},
            keyframe_indices=drawn,
            timings=timings,
        )


__all__ = [  # the plan's names stay importable from here, where the pipeline is
    "DEFAULT_BORDER",
    "DEFAULT_CADENCE",
    "DEFAULT_COLOUR",
    "DEFAULT_FPS",
    "DEFAULT_MOTION",
    "DEFAULT_NOISE",
    "DEFAULT_REDRAW_STEPS",
    "DEFAULT_SECONDS",
    "DEFAULT_STRENGTH",
    "MAX_SECONDS",
    "count_frames",
    "AnimationOutput",
    "AnimationPipeline",
    "AnimationPlan",
    "advance_depth",
    "frame_count",
    "resolve_motion",
    "segments",
    "validate_animation",
    "warp_chain",
    "with_image",
]
