"""Motion over normalised time 0..1 and placement of an object's whole path inside a region.

Defining motion over normalised time makes a clip of any length show the same movement.
"""

from __future__ import annotations

import math

import numpy as np

from fusionframes.synthetic.world import (
    BOUNCE_HEIGHT,
    DIRECTIONS,
    MARGIN,
    PAN_SHIFT,
    ROTATION_DEG,
    SCALE_RANGE,
    SHAPE_EXTENT,
    TRAVEL,
    ObjectSpec,
    Scene,
)


def object_state(obj: ObjectSpec, tau: float) -> tuple[float, float, float, float]:
    """(centre x, centre y, scale, angle in degrees) at time ``tau`` in [0, 1], before any camera pan."""
    x, y = obj.start
    scale, angle = 1.0, 0.0
    if obj.motion in DIRECTIONS:
        dx, dy = DIRECTIONS[obj.motion]
        x, y = x + dx * TRAVEL[obj.speed] * tau, y + dy * TRAVEL[obj.speed] * tau
    elif obj.motion in ("growing", "shrinking"):
        a, b = SCALE_RANGE[obj.speed]
        a, b = (a, b) if obj.motion == "growing" else (b, a)
        scale = a + (b - a) * tau
    elif obj.motion == "rotating":
        angle = ROTATION_DEG[obj.speed] * tau
    elif obj.motion == "bouncing":
        y = y - BOUNCE_HEIGHT[obj.speed] * abs(math.sin(2 * math.pi * tau))
    return x, y, scale, angle


def pan_offset(scene: Scene, tau: float) -> float:
    """Horizontal screen shift of the whole scene: a camera panning left moves the scene right."""
    if scene.camera_pan is None:
        return 0.0
    return (PAN_SHIFT if scene.camera_pan == "left" else -PAN_SHIFT) * tau


def path_bounds(obj: ObjectSpec, pan: str | None) -> tuple[float, float, float, float, float]:
    """(min dx, max dx, min dy, max dy, half extent) of the on-screen path relative to the start."""
    dx, dy = (0.0, 0.0)
    if obj.motion in DIRECTIONS:
        ux, uy = DIRECTIONS[obj.motion]
        dx, dy = ux * TRAVEL[obj.speed], uy * TRAVEL[obj.speed]
    if pan is not None:
        dx += PAN_SHIFT if pan == "left" else -PAN_SHIFT
    bounce = BOUNCE_HEIGHT[obj.speed] if obj.motion == "bouncing" else 0.0
    max_scale = max(SCALE_RANGE[obj.speed]) if obj.motion in ("growing", "shrinking") else 1.0
    half = obj.size / 2 * max_scale * SHAPE_EXTENT[obj.shape]
    return min(0.0, dx), max(0.0, dx), min(0.0, dy) - bounce, max(0.0, dy), half


def place(
    obj: ObjectSpec,
    rng: np.random.Generator,
    region: tuple[float, float, float, float],
    pan: str | None,
    path_jitter: float | None = None,
) -> bool:
    """Pick a start so the whole path stays inside ``region`` (x0, x1, y0, y1); False if it cannot.

    ``path_jitter`` None: anywhere the path fits. A number: the path is centred in the region, moved by
    at most that fraction of the frame on each axis (still kept inside).
    """
    lo_dx, hi_dx, lo_dy, hi_dy, half = path_bounds(obj, pan)
    x_lo, x_hi = region[0] + MARGIN + half - lo_dx, region[1] - MARGIN - half - hi_dx
    y_lo, y_hi = region[2] + MARGIN + half - lo_dy, region[3] - MARGIN - half - hi_dy
    if x_lo > x_hi or y_lo > y_hi:
        return False
    if path_jitter is None:
        obj.start = (float(rng.uniform(x_lo, x_hi)), float(rng.uniform(y_lo, y_hi)))
        return True
    # the middle of [lo, hi] is the start that centres the path's extent in the region
    jitter = rng.uniform(-path_jitter, path_jitter, size=2)
    x = min(max((x_lo + x_hi) / 2 + jitter[0], x_lo), x_hi)
    y = min(max((y_lo + y_hi) / 2 + jitter[1], y_lo), y_hi)
    obj.start = (float(x), float(y))
    return True
