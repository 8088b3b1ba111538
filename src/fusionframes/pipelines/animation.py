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

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusionframes.camera import (
    BORDER_MODES,
    DEFAULT_FOV_DEG,
    PRESET_NAMES,
    CameraMotion,
    add_noise,
    blend_cadence,
    chain_source_coords,
    custom_motion,
    depth_from_image,
    get_preset,
    match_colours,
    sample,
    schedule_values,
    warp,
)
from fusionframes.camera.presets import preset_parts
from fusionframes.camera.warp import prepare_depth
from fusionframes.components import ModelComponents
from fusionframes.config import ModelConfig, kandinsky_video_1_0
from fusionframes.lora.pipeline import LoraMixin
from fusionframes.pipelines.img2img import (
    ImageLike,
    ImageToImagePipeline,
    check_steps,
    check_strength,
    fit_image,
    load_image,
)
from fusionframes.pipelines.text_to_video import (
    OUTPUT_TYPES,
    ProgressCallback,
    TextToVideoPipeline,
    to_output_type,
    validate_size,
)
from fusionframes.runtime import finite_number

DEFAULT_SECONDS = 4.0
DEFAULT_FPS = 24.0
MAX_SECONDS = 600.0
MAX_FPS = 60.0
DEFAULT_MOTION = "zoom_in"
DEFAULT_STRENGTH = 0.45
DEFAULT_CADENCE = 3  # redraw every 3rd frame: cross-fades stay invisible, a third of the model calls
DEFAULT_REDRAW_STEPS = 9  # schedule for redraws: strength 0.45 runs round(0.45 * 9) = 4 steps
DEFAULT_NOISE = 0.02
DEFAULT_BORDER = "reflect"
DEFAULT_COLOUR = "lab"
COLOUR_CHOICES = ("lab", "hsv", "rgb", None)
RELEASED_ANIMATION_SIZE = (640, 640)  # square frames suit camera moves; the released model handles 640
CUSTOM_KEYS = (
    "zoom",
    "angle",
    "translation_x",
    "translation_y",
    "translation_z",
    "rotation_3d_x",
    "rotation_3d_y",
    "rotation_3d_z",
)
MIN_DEPTH = 0.05  # a warped depth map is kept this far in front of the camera

MotionLike = str | CameraMotion | Sequence[CameraMotion] | Mapping[str, Any]
PromptLike = str | Mapping[int, str]


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class AnimationPlan:
    """A validated animation request: everything :meth:`AnimationPipeline.render` needs."""

    prompts: tuple[tuple[int, str], ...]  # (first frame, prompt), sorted by frame
    negative_prompt: str | None
    motions: tuple[CameraMotion, ...]
    num_frames: int
    fps: float
    width: int
    height: int
    strengths: tuple[float, ...]  # one per frame
    cadence: int
    border: str
    colour_coherence: str | None
    noise: float
    steps: int  # schedule of the redraws
    first_frame_steps: int  # schedule of the text-to-image first frame
    guidance_scale: float
    seed: int | None
    fov_deg: float = DEFAULT_FOV_DEG
    image: torch.Tensor | None = field(default=None, repr=False)  # [1, 3, H, W] in [0, 1], fitted
    depth: torch.Tensor | None = field(default=None, repr=False)  # [1, 1, H, W] depths of frame 0
    labels: dict[str, Any] = field(default_factory=dict)  # JSON-friendly motion/image/depth/strength

    def prompt_at(self, frame: int) -> str:
        """The prompt whose key is the last one at or before ``frame`` (the first before any key)."""
        current = self.prompts[0][1]
        for start, prompt in self.prompts:
            if start <= frame:
                current = prompt
        return current

    def redraw_frames(self) -> list[int]:
        """Frames the model redraws: every ``cadence``-th one whose strength is above 0."""
        return [t for t in range(self.cadence, self.num_frames, self.cadence) if self.strengths[t] > 0]

    def settings(self) -> dict[str, Any]:
        """What determines the animation, as JSON-friendly metadata."""
        prompt: Any = self.prompts[0][1] if len(self.prompts) == 1 else {str(k): p for k, p in self.prompts}
        return {
            "mode": "animation",
            "prompt": prompt,
            "negative_prompt": self.negative_prompt,
            "motion": self.labels.get("motion"),
            "seconds": self.num_frames / self.fps,
            "fps": self.fps,
            "num_frames": self.num_frames,
            "width": self.width,
            "height": self.height,
            "strength": self.labels.get("strength"),
            "cadence": self.cadence,
            "border": self.border,
            "colour_coherence": self.colour_coherence,
            "noise": self.noise,
            "steps": self.steps,
            "first_frame_steps": self.first_frame_steps,
            "guidance_scale": self.guidance_scale,
            "seed": self.seed,
            "fov_deg": self.fov_deg,
            "image": self.labels.get("image"),
            "depth": self.labels.get("depth"),
        }


def _number(value: Any, name: str, low: float, high: float) -> float:
    value = finite_number(value, name)
    if not low < value <= high:
        raise ValueError(f"{name}: must be > {low:g} and <= {high:g}, got {value:g}")
    return value


def check_prompts(prompt: PromptLike, num_frames: int) -> tuple[tuple[int, str], ...]:
    """A prompt, or a schedule ``{frame: prompt}`` whose keys are frames (ints or digit strings)."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("prompt: must be a non-empty string")
        return ((0, prompt),)
    if not isinstance(prompt, Mapping) or not prompt:
        raise ValueError("prompt: must be a non-empty string or a non-empty {frame: prompt} schedule")
    keys: dict[int, str] = {}
    for key, text in prompt.items():
        frame = int(key) if isinstance(key, str) and key.strip().isdigit() else key
        if isinstance(frame, bool) or not isinstance(frame, int | np.integer) or not 0 <= frame < num_frames:
            raise ValueError(f"prompt: schedule key {key!r} is not a frame in 0..{num_frames - 1}")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"prompt: the prompt at frame {key!r} must be a non-empty string")
        if int(frame) in keys:
            raise ValueError(f"prompt: frame {int(frame)} appears twice in the schedule")
        keys[int(frame)] = text
    return tuple(sorted(keys.items()))


def count_frames(seconds: Any, fps: Any) -> tuple[int, float]:
    """``round(seconds * fps)`` frames (at least one) and the checked fps."""
    seconds = _number(seconds, "seconds", 0.0, MAX_SECONDS)
    fps = _number(fps, "fps", 0.0, MAX_FPS)
    frames = round(seconds * fps)
    if frames < 1:
        raise ValueError(f"seconds: {seconds:g} s at {fps:g} fps is less than one frame")
    return frames, fps


def resolve_motion(
    motion: MotionLike,
    num_frames: int,
    fps: float,
    width: int,
    seed: int = 0,
    fov_deg: float = DEFAULT_FOV_DEG,
) -> tuple[list[CameraMotion], Any]:
    """Per-frame moves and a JSON-friendly label from a preset name, custom schedules or moves."""
    if isinstance(motion, str):
        parts = preset_parts(motion)
        unknown = [p for p in parts if p not in PRESET_NAMES]
        if unknown:
            raise ValueError(
                f"motion: unknown preset {unknown[0]!r}; valid presets: {', '.join(PRESET_NAMES)} "
                "(combine with '+', or give custom schedules)"
            )
        motion = "+".join(parts)
        return get_preset(motion, num_frames, fps, width=width, fov_deg=fov_deg, seed=seed), motion
    if isinstance(motion, CameraMotion):
        return [motion] * num_frames, {"constant": asdict(motion)}
    if isinstance(motion, Mapping):
        allowed = (*CUSTOM_KEYS, "interpolation")
        unknown = [k for k in motion if k not in allowed]
        if unknown or not motion:
            raise ValueError(
                f"motion: unknown schedule {unknown[0] if unknown else None!r}; allowed: {', '.join(allowed)}"
            )
        moves = custom_motion(**dict(motion), num_frames=num_frames)
        label = {k: v if isinstance(v, str | int | float) else "per-frame" for k, v in motion.items()}
        return moves, {"custom": label}
    if isinstance(motion, Sequence) and all(isinstance(m, CameraMotion) for m in motion):
        if len(motion) != num_frames:
            raise ValueError(f"motion: expected {num_frames} CameraMotion (one per frame), got {len(motion)}")
        return list(motion), [asdict(m) for m in motion]
    raise ValueError(
        "motion: expected a preset name such as 'zoom_in' or 'zoom_in+rotate_cw', custom schedules "
        f"{{'zoom': '0:(1.02)', ...}}, or a list of CameraMotion; got {type(motion).__name__}"
    )


def resolve_strengths(strength: Any, num_frames: int) -> tuple[tuple[float, ...], Any]:
    """A constant, a schedule string such as ``'0:(0.6), 48:(0.4)'`` or one value per frame."""
    if isinstance(strength, str):
        values = schedule_values(strength, num_frames, name="strength")
        label: Any = strength
    elif isinstance(strength, Sequence | np.ndarray) and not isinstance(strength, str):
        values = schedule_values(np.asarray(strength, dtype=np.float64), num_frames, name="strength")
        label = [float(v) for v in values]
    else:
        return (check_strength(strength),) * num_frames, float(strength)
    bad = np.flatnonzero((values < 0.0) | (values > 1.0))
    if bad.size:
        raise ValueError(
            f"strength: must be between 0 and 1 at every frame, got {values[bad[0]]:g} at frame {bad[0]}"
        )
    return tuple(float(v) for v in values), label


def check_choice(value: Any, allowed: Sequence[Any], name: str) -> Any:
    if isinstance(value, str) and value.lower() == "none" and None in allowed:
        return None
    if value not in allowed:
        shown = ", ".join("None" if a is None else str(a) for a in allowed)
        raise ValueError(f"{name}: unknown {value!r}; allowed: {shown}")
    return value


def _label(source: Any) -> str | None:
    if source is None:
        return None
    return str(source) if isinstance(source, str | Path) else f"<{type(source).__name__}>"


def load_depth(source: Any, width: int, height: int) -> torch.Tensor:
    """A depth picture (path, array or tensor) at the animation size, as ``[1, 1, H, W]`` depths."""
    if isinstance(source, str | Path):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(f"depth: file not found: {path}")
        source = path
    try:
        return depth_from_image(source, size=(height, width))
    except (OSError, SyntaxError) as error:
        raise ValueError(f"depth: cannot read {str(source)!r} as an image ({error})") from None
    except ValueError as error:
        raise ValueError(f"depth: {str(error).removeprefix('source: ')}") from None


def default_size(config: ModelConfig) -> tuple[int, int]:
    """Animation width and height: 640x640 for the released model, else the model's own default."""
    if config == kandinsky_video_1_0():
        return RELEASED_ANIMATION_SIZE
    return config.sampling.width, config.sampling.height


def validate_animation(
    config: ModelConfig,
    prompt: PromptLike,
    image: ImageLike | None = None,
    motion: MotionLike = DEFAULT_MOTION,
    seconds: float = DEFAULT_SECONDS,
    fps: float = DEFAULT_FPS,
    width: int | None = None,
    height: int | None = None,
    strength: Any = DEFAULT_STRENGTH,
    cadence: int = DEFAULT_CADENCE,
    border: str = DEFAULT_BORDER,
    colour_coherence: str | None = DEFAULT_COLOUR,
    noise: float = DEFAULT_NOISE,
    depth: Any = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int | None = None,
    negative_prompt: str | None = None,
    fov_deg: float = DEFAULT_FOV_DEG,
    draw_seed: bool = True,
) -> AnimationPlan:
    """Check every option against ``config`` (cheap: reads the image and depth files, loads no model)."""
    num_frames, fps = count_frames(seconds, fps)
    prompts = check_prompts(prompt, num_frames)
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise ValueError(f"negative_prompt: must be a string or None, got {type(negative_prompt).__name__}")
    negative_prompt = negative_prompt if negative_prompt and negative_prompt.strip() else None
    default_w, default_h = default_size(config)
    width = validate_size(width if width is not None else default_w, "width", config.pixel_multiple)
    height = validate_size(height if height is not None else default_h, "height", config.pixel_multiple)
    strengths, strength_label = resolve_strengths(strength, num_frames)
    if isinstance(cadence, bool) or not isinstance(cadence, int | np.integer) or cadence < 1:
        raise ValueError(f"cadence: must be an integer >= 1, got {cadence!r}")
    border = check_choice(border, BORDER_MODES, "border")
    colour_coherence = check_choice(colour_coherence, COLOUR_CHOICES, "colour_coherence")
    noise = finite_number(noise, "noise", 0.0)
    if noise > 1.0:
        raise ValueError(f"noise: must be between 0 and 1, got {noise:g}")
    model_steps = config.sampling.num_inference_steps
    first_steps = check_steps(steps if steps is not None else model_steps)
    redraw_steps = check_steps(steps if steps is not None else min(DEFAULT_REDRAW_STEPS, model_steps))
    guidance = finite_number(
        guidance_scale if guidance_scale is not None else config.sampling.guidance_scale,
        "guidance_scale",
        0.0,
    )
    fov_deg = finite_number(fov_deg, "fov_deg")
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg: must be between 0 and 180 degrees, got {fov_deg:g}")
    if seed is None and draw_seed:
        seed = secrets.randbelow(2**31)
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**63:
            raise ValueError(f"seed: must be an integer between 0 and 2**63 - 1, got {seed!r}")
        seed = int(seed)
    motions, motion_label = resolve_motion(motion, num_frames, fps, width, seed or 0, fov_deg)
    picture = fit_image(load_image(image), width, height) if image is not None else None
    depth_map = load_depth(depth, width, height) if depth is not None else None
    return AnimationPlan(
        prompts=prompts,
        negative_prompt=negative_prompt,
        motions=tuple(motions),
        num_frames=num_frames,
        fps=fps,
        width=width,
        height=height,
        strengths=strengths,
        cadence=int(cadence),
        border=border,
        colour_coherence=colour_coherence,
        noise=noise,
        steps=redraw_steps,
        first_frame_steps=first_steps,
        guidance_scale=guidance,
        seed=seed,
        fov_deg=fov_deg,
        image=picture,
        depth=depth_map,
        labels={
            "motion": motion_label,
            "strength": strength_label,
            "image": _label(image),
            "depth": _label(depth),
        },
    )


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
class AnimationOutput:
    """Frames plus what is needed to play and reproduce them (like ``VideoOutput``)."""

    frames: Any  # list[PIL.Image] | np.ndarray [T, H, W, 3] uint8 | torch.Tensor [T, 3, H, W] in [0, 1]
    fps: float
    settings: dict[str, Any]
    keyframe_indices: list[int]  # frames the model drew: 0 when made from text, then the redraws
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.frames) / self.fps

    def metadata(self) -> dict[str, Any]:
        return {**self.settings, "playback_fps": self.fps, "generator": "fusionframes"}

    def save(self, path: str | Path) -> Path:
        from fusionframes.io.video import write_video

        return write_video(self.frames, path, fps=self.fps, metadata=self.metadata())


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
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        device: str | torch.device | None = "cpu",
        dtype: str = "auto",
        **kwargs: Any,
    ) -> AnimationPipeline:
        """``model``: None/"builtin", "kandinsky-video-1.0", or a model folder (as for text-to-video)."""
        return cls(TextToVideoPipeline.from_pretrained(model, device=device, dtype=dtype, **kwargs))

    def __call__(
        self,
        prompt: PromptLike,
        image: ImageLike | None = None,
        motion: MotionLike = DEFAULT_MOTION,
        seconds: float = DEFAULT_SECONDS,
        fps: float = DEFAULT_FPS,
        width: int | None = None,
        height: int | None = None,
        strength: Any = DEFAULT_STRENGTH,
        cadence: int = DEFAULT_CADENCE,
        border: str = DEFAULT_BORDER,
        colour_coherence: str | None = DEFAULT_COLOUR,
        noise: float = DEFAULT_NOISE,
        depth: Any = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        negative_prompt: str | None = None,
        fov_deg: float = DEFAULT_FOV_DEG,
        output_type: str = "pil",
        callback: ProgressCallback | None = None,
        progress: bool = True,
    ) -> AnimationOutput:
        """Render one animation. ``generator`` wins over ``seed``; with neither a seed is drawn and
        recorded in ``output.settings['seed']``."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type: unknown {output_type!r}; allowed: {', '.join(OUTPUT_TYPES)}")
        plan = validate_animation(
            self.config,
            prompt,
            image,
            motion,
            seconds,
            fps,
            width,
            height,
            strength,
            cadence,
            border,
            colour_coherence,
            noise,
            depth,
            steps,
            guidance_scale,
            seed,
            negative_prompt,
            fov_deg,
            draw_seed=generator is None,
        )
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(plan.seed)
        return self.render(plan, generator, output_type, callback, progress)

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
        self,
        plan: AnimationPlan,
        generator: torch.Generator,
        output_type: str = "pil",
        callback: ProgressCallback | None = None,
        progress: bool = True,
    ) -> AnimationOutput:
        """Run a validated plan: first frame, then warp/redraw spans with cadence in-betweens."""
        from tqdm.auto import tqdm

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


def with_image(plan: AnimationPlan, image: torch.Tensor, label: str) -> AnimationPlan:
    """The same plan started from another picture (movies continue scenes this way)."""
    picture = fit_image(load_image(image), plan.width, plan.height)
    return replace(plan, image=picture, labels={**plan.labels, "image": label})


def frame_count(seconds: float, fps: float) -> int:
    """Frames an animation of ``seconds`` at ``fps`` has (validated)."""
    return count_frames(seconds, fps)[0]


__all__ = [
    "DEFAULT_CADENCE",
    "DEFAULT_REDRAW_STEPS",
    "DEFAULT_STRENGTH",
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
