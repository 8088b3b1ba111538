"""Rendering scenes to anti-aliased frames, and the per-frame ground truth (centroid, box, radius,
angle) of every object.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from fusionframes.synthetic.captions import scene_spec
from fusionframes.synthetic.motion import object_state, pan_offset
from fusionframes.synthetic.world import (
    BACKGROUNDS,
    COLOURS,
    OVAL_AXES,
    SHAPE_EXTENT,
    STAR_RADII,
    SUPERSAMPLE,
    TRIANGLE_RADIUS,
    ObjectSpec,
    Scene,
    background_profile,
)


def shape_outline(
    shape: str, cx: float, cy: float, radius: float, angle_deg: float
) -> list[tuple[float, float]]:
    """Polygon vertices of a square, triangle, star or oval (pixels); rotation clockwise on screen."""
    a0 = math.radians(angle_deg) - math.pi / 2
    if shape == "square":
        r, corners = radius * SHAPE_EXTENT["square"], [a0 + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if shape == "triangle":
        r = radius * TRIANGLE_RADIUS
        return [
            (cx + r * math.cos(a0 + k * 2 * math.pi / 3), cy + r * math.sin(a0 + k * 2 * math.pi / 3))
            for k in range(3)
        ]
    if shape == "star":
        radii = [radius * STAR_RADII[k % 2] for k in range(10)]
        return [
            (cx + r * math.cos(a0 + k * math.pi / 5), cy + r * math.sin(a0 + k * math.pi / 5))
            for k, r in enumerate(radii)
        ]
    if shape == "oval":
        turn, (a, b) = math.radians(angle_deg), (radius * OVAL_AXES[0], radius * OVAL_AXES[1])
        points = [(a * math.cos(t), b * math.sin(t)) for t in (k * math.pi / 32 for k in range(64))]
        return [
            (cx + x * math.cos(turn) - y * math.sin(turn), cy + x * math.sin(turn) + y * math.cos(turn))
            for x, y in points
        ]
    raise ValueError(f"shape: no outline for {shape!r}; allowed: square, triangle, star, oval")


def unit_area(shape: str) -> float:
    """Area of ``shape`` drawn at radius 1 (the shoelace formula over its outline; pi for a circle)."""
    if shape == "circle":
        return math.pi
    points = shape_outline(shape, 0.0, 0.0, 1.0, 0.0)
    pairs = zip(points, points[1:] + points[:1], strict=True)
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in pairs))


def object_geometry(
    scene: Scene, obj: ObjectSpec, size: int, tau: float
) -> tuple[float, float, float, float]:
    """(centre x px, centre y px, radius px, angle deg) on screen at time ``tau``."""
    x, y, scale, angle = object_state(obj, tau)
    return (x + pan_offset(scene, tau)) * size, y * size, obj.size * scale * size / 2, angle


def _object_alpha(
    shape: str, cx: float, cy: float, radius: float, angle: float, size: int
) -> tuple[np.ndarray, slice, slice]:
    """Anti-aliased coverage in 0..1 of the object's window (rows, cols slices of the frame).

    Drawn at ``SUPERSAMPLE``x then box-filtered down; only the window around the object is drawn, shifted
    by whole pixels, so the result equals drawing the full frame.
    """
    s, reach = SUPERSAMPLE, radius * SHAPE_EXTENT[shape] + 2
    x0, y0 = max(int(math.floor(cx - reach)), 0), max(int(math.floor(cy - reach)), 0)
    x1, y1 = min(int(math.ceil(cx + reach)), size), min(int(math.ceil(cy + reach)), size)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0)), slice(0, 0), slice(0, 0)
    mask = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw = ImageDraw.Draw(mask)
    lx, ly = cx - x0, cy - y0
    if shape == "circle":
        draw.ellipse([(lx - radius) * s, (ly - radius) * s, (lx + radius) * s, (ly + radius) * s], fill=255)
    else:
        draw.polygon([(px * s, py * s) for px, py in shape_outline(shape, lx, ly, radius, angle)], fill=255)
    alpha = np.asarray(mask.resize((x1 - x0, y1 - y0), Image.BOX), np.float64) / 255.0
    return alpha, slice(y0, y1), slice(x0, x1)


def _background_image(scene: Scene, size: int, tau: float) -> np.ndarray:
    """Background ``[H, W, 3]``; a panning camera shows faint vertical stripes so the pan is visible."""
    image = np.repeat(background_profile(scene.background, scene.gradient, size)[:, None], size, axis=1)
    if scene.camera_pan is not None:
        x = (np.arange(size) + 0.5) / size - pan_offset(scene, tau)
        image = image + 12.0 * np.sin(2 * math.pi * x / 0.375)[None, :, None]
    return image


def render_frame(scene: Scene, size: int, tau: float, background: np.ndarray | None = None) -> np.ndarray:
    """One frame ``[H, W, 3]`` uint8 at normalised time ``tau`` (``background``: a precomputed one)."""
    image = (background if background is not None else _background_image(scene, size, tau)).copy()
    for obj in scene.objects:
        alpha, rows, cols = _object_alpha(obj.shape, *object_geometry(scene, obj, size, tau), size)
        a = alpha[..., None]
        image[rows, cols] = image[rows, cols] * (1 - a) + np.array(COLOURS[obj.colour], float) * a
    return np.clip(image.round(), 0, 255).astype(np.uint8)


MAX_SIZE = 1024  # pixels: a frame is drawn in float64 at this size (25 MB), its objects at 4x
MAX_FRAMES = 1024  # a clip is held in memory whole


def check_clip_args(size: int, frames: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or not 32 <= size <= MAX_SIZE or size % 2:
        raise ValueError(f"size: must be an even int in [32, {MAX_SIZE}] (pixels), got {size!r}")
    if not isinstance(frames, int) or isinstance(frames, bool) or not 2 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames: must be an int in [2, {MAX_FRAMES}], got {frames!r}")


def render_clip(scene: Scene, size: int = 128, frames: int = 16) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 spanning normalised time 0..1 (the same motion at any frame count)."""
    check_clip_args(size, frames)
    still = None if scene.camera_pan else _background_image(scene, size, 0.0)
    return np.stack([render_frame(scene, size, t / (frames - 1), still) for t in range(frames)])


def _box(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[float]:
    if shape == "circle":
        return [cx - radius, cy - radius, cx + radius, cy + radius]
    xs, ys = zip(*shape_outline(shape, cx, cy, radius, angle), strict=True)
    return [min(xs), min(ys), max(xs), max(ys)]


def ground_truth(scene: Scene, size: int, frames: int) -> dict:
    """The scene spec plus per-frame on-screen centroid, box (x0, y0, x1, y1), radius and angle (pixels)."""
    check_clip_args(size, frames)
    tracks = []
    for obj in scene.objects:
        rows = []
        for t in range(frames):
            cx, cy, radius, angle = object_geometry(scene, obj, size, t / (frames - 1))
            box = _box(obj.shape, cx, cy, radius, angle)
            rows.append(
                {
                    "centroid": [round(cx, 3), round(cy, 3)],
                    "box": [round(v, 3) for v in box],
                    "radius": round(radius, 3),
                    "angle": round(angle, 3),
                }
            )
        tracks.append({"colour": obj.colour, "shape": obj.shape, "motion": obj.motion, "frames": rows})
    return {
        "scene": scene.to_dict(),
        "spec": scene_spec(scene),
        "palette": {o.colour: list(COLOURS[o.colour]) for o in scene.objects},
        "background_rgb": list(BACKGROUNDS[scene.background]),
        "size": size,
        "frames": frames,
        "tracks": tracks,
    }
