"""Animation requests: every option of an animation checked against the model, before any loads.

:func:`validate_animation` turns what a user asks for (a prompt or a ``{frame: prompt}`` schedule, a
camera motion preset or custom schedules, strengths, cadence, an init image and depth map) into an
:class:`AnimationPlan`, which :meth:`fusionframes.pipelines.animation.AnimationPipeline.render` runs.
"""

from __future__ import annotations

import secrets
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
    custom_motion,
    depth_from_image,
    get_preset,
    schedule_values,
)
from fusionframes.camera.presets import preset_parts
from fusionframes.config import ModelConfig, kandinsky_video_1_0
from fusionframes.pipelines.img2img import ImageLike, check_steps, check_strength, fit_image, load_image
from fusionframes.pipelines.text_to_video import validate_size
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


def with_image(plan: AnimationPlan, image: torch.Tensor, label: str) -> AnimationPlan:
    """The same plan started from another picture (movies continue scenes this way)."""
    picture = fit_image(load_image(image), plan.width, plan.height)
    return replace(plan, image=picture, labels={**plan.labels, "image": label})


def frame_count(seconds: float, fps: float) -> int:
    """Frames an animation of ``seconds`` at ``fps`` has (validated)."""
    return count_frames(seconds, fps)[0]
