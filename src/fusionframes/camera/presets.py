"""Named camera moves and keyframed custom moves, as per-frame :class:`CameraMotion` lists.

Rates are defined per second and divided by ``fps``, so a preset looks the same at any frame rate;
``speed`` scales them (negative reverses a move). Pixel rates are for a 512 px wide frame and scale
with ``width``. Names describe what the camera does; the picture moves the other way (``pan_left``
slides the content right). ``rotate_cw``/``rotate_ccw`` name the turn of the picture on screen.
Presets combine with ``+`` (``"zoom_in+rotate_cw"``): per frame, zooms multiply and the rest adds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fusionframes.camera.schedule import ScheduleLike, schedule_values
from fusionframes.camera.warp import (
    DEFAULT_FOV_DEG,
    REFERENCE_DEPTH,
    CameraMotion,
    focal_length,
    motion_schedule,
    rotation_matrix,
)

REFERENCE_WIDTH = 512
ZOOM_PER_SECOND = 1.25  # zoom_in enlarges the picture 25 % per second
PAN_PX_PER_SECOND = 64.0
ROTATE_DEG_PER_SECOND = 12.0
DOLLY_PER_SECOND = 0.2  # depth units (the flat plane is at 1.0)
ORBIT_DEG_PER_SECOND = 10.0
ORBIT_PIVOT_DEPTH = 1.5 * REFERENCE_DEPTH  # behind the flat plane, so the plane visibly slides (~60 px/s)
SHAKE_PX = 6.0
SHAKE_DEG = 0.8
SHAKE_HZ = 1.5


@dataclass(frozen=True)
class PresetContext:
    """Everything a preset builder may depend on."""

    num_frames: int
    fps: float
    speed: float
    width: int
    fov_deg: float
    seed: int

    @property
    def per_frame(self) -> float:
        """Fraction of a per-second rate that one frame covers at this speed."""
        return self.speed / self.fps

    @property
    def px(self) -> float:
        """Pixel scale of this frame width relative to the 512 px reference."""
        return self.width / REFERENCE_WIDTH

    def constant(self, motion: CameraMotion) -> list[CameraMotion]:
        return [motion] * self.num_frames


def _orbit(ctx: PresetContext) -> list[CameraMotion]:
    """Camera circles right around a pivot at ``ORBIT_PIVOT_DEPTH`` while turning to keep facing it.

    Per frame the camera moves to ``C = (r sin a, 0, r (1 - cos a))`` and yaws by ``a`` toward the
    pivot; the move in the new camera's frame ``R^T C`` becomes ``tx`` (pixels at reference depth) and
    ``tz``, the turn becomes ``ry``.
    """
    a = ORBIT_DEG_PER_SECOND * ctx.per_frame
    r = ORBIT_PIVOT_DEPTH
    centre = np.array([r * math.sin(math.radians(a)), 0.0, r * (1 - math.cos(math.radians(a)))])
    offset = rotation_matrix(0.0, a, 0.0).T @ centre
    f = focal_length(ctx.width, ctx.fov_deg)
    return ctx.constant(CameraMotion(tx=-offset[0] * f / REFERENCE_DEPTH, tz=float(offset[2]), ry=a))


def _shake(ctx: PresetContext) -> list[CameraMotion]:
    """Hand-held jitter: smooth pseudo-random offsets from ``seed``; motions are their frame-to-frame
    differences, so the camera wanders around its start instead of drifting away."""
    rng = np.random.default_rng(ctx.seed)
    t = np.arange(ctx.num_frames) / ctx.fps

    def wobble() -> np.ndarray:
        freqs = SHAKE_HZ * rng.uniform(0.5, 1.5, size=3)
        phases = rng.uniform(0, 2 * np.pi, size=3)
        weights = rng.uniform(0.5, 1.0, size=3)
        curve = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
        return curve / weights.sum()

    x, y, angle = wobble() * SHAKE_PX * ctx.px, wobble() * SHAKE_PX * ctx.px, wobble() * SHAKE_DEG
    steps = [np.diff(v, prepend=v[:1]) * ctx.speed for v in (x, y, angle)]
    return [
        CameraMotion(tx=float(dx), ty=float(dy), angle=float(da)) for dx, dy, da in zip(*steps, strict=True)
    ]


PresetBuilder = Callable[[PresetContext], list[CameraMotion]]


def _steady(zoom: float = 1.0, **per_second: float) -> PresetBuilder:
    """Constant move from per-second rates: zoom compounds, pixel rates follow the frame width."""

    def build(ctx: PresetContext) -> list[CameraMotion]:
        rates = {k: v * ctx.per_frame * (ctx.px if k in ("tx", "ty") else 1.0) for k, v in per_second.items()}
        return ctx.constant(CameraMotion(zoom=zoom**ctx.per_frame, **rates))

    return build


PRESETS: dict[str, tuple[str, PresetBuilder]] = {
    "static": ("no camera move", _steady()),
    "zoom_in": ("picture grows 25 %/s about the centre", _steady(zoom=ZOOM_PER_SECOND)),
    "zoom_out": ("picture shrinks 20 %/s (1/1.25) about the centre", _steady(zoom=1 / ZOOM_PER_SECOND)),
    "pan_left": ("camera pans left: content slides right 64 px/s", _steady(tx=PAN_PX_PER_SECOND)),
    "pan_right": ("camera pans right: content slides left 64 px/s", _steady(tx=-PAN_PX_PER_SECOND)),
    "pan_up": ("camera pans up: content slides down 64 px/s", _steady(ty=PAN_PX_PER_SECOND)),
    "pan_down": ("camera pans down: content slides up 64 px/s", _steady(ty=-PAN_PX_PER_SECOND)),
    "rotate_cw": ("picture turns clockwise 12 deg/s", _steady(angle=-ROTATE_DEG_PER_SECOND)),
    "rotate_ccw": ("picture turns counter-clockwise 12 deg/s", _steady(angle=ROTATE_DEG_PER_SECOND)),
    "dolly": ("camera moves forward 0.2 depth units/s (perspective)", _steady(tz=DOLLY_PER_SECOND)),
    "dolly_out": ("camera moves back 0.2 depth units/s (perspective)", _steady(tz=-DOLLY_PER_SECOND)),
    "orbit": ("camera circles right around a point behind the scene, 10 deg/s", _orbit),
    "shake": ("hand-held jitter of about 6 px and 0.8 deg, seeded", _shake),
}

PRESET_NAMES = tuple(sorted(PRESETS))


def _check_positive(value: float, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
    return float(value)


def preset_parts(name: str) -> list[str]:
    """The presets of a ``+``-combination, canonical: hyphens as typed (``zoom-in``) are aliases of the
    underscore names (``zoom_in``)."""
    return [part.strip().replace("-", "_") for part in name.split("+")]


def get_preset(
    name: str,
    num_frames: int,
    fps: float,
    speed: float = 1.0,
    *,
    width: int = REFERENCE_WIDTH,
    fov_deg: float = DEFAULT_FOV_DEG,
    seed: int = 0,
) -> list[CameraMotion]:
    """Per-frame motions of a named preset or a ``+``-combination of presets (``len == num_frames``)."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames: must be an integer >= 1, got {num_frames!r}")
    fps = _check_positive(fps, "fps")
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not math.isfinite(speed):
        raise ValueError(f"speed: must be a finite number, got {speed!r}")
    width = int(_check_positive(width, "width"))
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"preset: expected a name, one of {', '.join(PRESET_NAMES)}, got {name!r}")
    parts = preset_parts(name)
    unknown = [p for p in parts if p not in PRESETS]
    if unknown:
        raise ValueError(
            f"preset: unknown {unknown[0]!r}; valid presets: {', '.join(PRESET_NAMES)} (combine with '+')"
        )
    ctx = PresetContext(num_frames, fps, float(speed), width, fov_deg, seed)
    motions = PRESETS[parts[0]][1](ctx)
    for part in parts[1:]:
        motions = [a.then(b) for a, b in zip(motions, PRESETS[part][1](ctx), strict=True)]
    return motions


def describe_presets() -> dict[str, str]:
    """Preset name -> one-line description (for CLI help and docs)."""
    return {name: PRESETS[name][0] for name in PRESET_NAMES}


def custom_motion(
    zoom: ScheduleLike = "0:(1.0)",
    angle: ScheduleLike = "0:(0)",
    translation_x: ScheduleLike = "0:(0)",
    translation_y: ScheduleLike = "0:(0)",
    translation_z: ScheduleLike = "0:(0)",
    rotation_3d_x: ScheduleLike = "0:(0)",
    rotation_3d_y: ScheduleLike = "0:(0)",
    rotation_3d_z: ScheduleLike = "0:(0)",
    *,
    num_frames: int,
    interpolation: str = "linear",
) -> list[CameraMotion]:
    """Per-frame motions from keyframe schedules, one per parameter (errors name the parameter)."""
    given = {
        "zoom": zoom,
        "angle": angle,
        "translation_x": translation_x,
        "translation_y": translation_y,
        "translation_z": translation_z,
        "rotation_3d_x": rotation_3d_x,
        "rotation_3d_y": rotation_3d_y,
        "rotation_3d_z": rotation_3d_z,
    }
    v = {k: schedule_values(s, num_frames, interpolation, name=k) for k, s in given.items()}
    return motion_schedule(
        num_frames,
        zoom=v["zoom"],
        angle=v["angle"],
        tx=v["translation_x"],
        ty=v["translation_y"],
        tz=v["translation_z"],
        rx=v["rotation_3d_x"],
        ry=v["rotation_3d_y"],
        rz=v["rotation_3d_z"],
        interpolation=interpolation,
    )
