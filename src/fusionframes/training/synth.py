"""The synthetic captioned-video world: coloured shapes moving on plain or gradient backgrounds.

Every clip is drawn from a seed (numpy Generator, no global state), so shards are reproducible. Motion
is defined over normalised time 0..1, so a clip of any length shows the same movement. A documented
list of held-out (colour, shape, motion) combinations never appears in training shards; the evaluator
(:mod:`fusionframes.evaluation`) uses them to measure compositional generalisation, and it reads the same
palette constants and parses prompts with :func:`parse_prompt`, the inverse of :func:`caption`.
See ``docs/synthetic_world.md`` for the grammar, palettes and measured ground-truth figures.
"""

from __future__ import annotations

import io
import json
import math
import re
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fusionframes.io.atomic import atomic_write

# ---------------------------------------------------------------------------------------------
# The world's vocabulary

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "navy": (25, 35, 95),
    "beige": (225, 210, 170),
    "teal": (25, 130, 130),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
DIRECTIONS: dict[str, tuple[float, float]] = {  # unit screen vectors (x right, y down)
    "moving right": (1.0, 0.0),
    "moving left": (-1.0, 0.0),
    "moving up": (0.0, -1.0),
    "moving down": (0.0, 1.0),
    "moving up-right": (math.sqrt(0.5), -math.sqrt(0.5)),
    "moving up-left": (-math.sqrt(0.5), -math.sqrt(0.5)),
    "moving down-right": (math.sqrt(0.5), math.sqrt(0.5)),
    "moving down-left": (-math.sqrt(0.5), math.sqrt(0.5)),
}
MOTIONS: tuple[str, ...] = (*DIRECTIONS, "growing", "shrinking", "rotating", "bouncing", "still")
SPEEDS: tuple[str, ...] = ("slowly", "quickly")
PANS: tuple[str, ...] = ("left", "right")

TRAVEL = {"slowly": 0.3, "quickly": 0.5}  # fraction of the frame a moving object crosses over the clip
SCALE_RANGE = {"slowly": (0.7, 1.3), "quickly": (0.55, 1.5)}  # growing: start -> end (shrinking: reversed)
ROTATION_DEG = {"slowly": 90.0, "quickly": 180.0}  # turned over the clip
BOUNCE_HEIGHT = {"slowly": 0.15, "quickly": 0.22}  # two hops over the clip, fraction of the frame
PAN_SHIFT = 0.15  # a panning camera shifts the whole scene by this fraction of the frame
SIZE_RANGE = (0.18, 0.30)  # base object size, fraction of the frame (two-object scenes: up to 0.22)
SIZE_WORDS = {"small": (0.0, 0.21), "large": (0.27, 1.0)}  # captions name sizes only at the extremes
MIN_CONTRAST = 100.0  # RGB distance an object keeps from every row of its background
MARGIN = 0.03  # objects' whole path stays this far (fraction of the frame) inside the frame
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: anti-aliased edges

# Drawn outline of each shape, in units of the object's radius (half its nominal size): why the
# factors differ is visual balance - the four shapes cover similar areas at the same nominal size.
SQUARE_HALF_SIDE = 0.9
TRIANGLE_RADIUS = 1.25
STAR_RADII = (1.3, 0.55)
SHAPE_EXTENT = {"circle": 1.0, "square": SQUARE_HALF_SIDE * math.sqrt(2), "triangle": TRIANGLE_RADIUS}
SHAPE_EXTENT["star"] = STAR_RADII[0]

HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("red", "star", "moving down"),
    ("blue", "triangle", "moving right"),
    ("green", "circle", "moving up"),
    ("yellow", "square", "moving left"),
    ("purple", "star", "moving up-right"),
    ("orange", "triangle", "moving down-left"),
    ("white", "square", "growing"),
    ("black", "circle", "shrinking"),
)
"""(colour, shape, motion) triples never emitted by :func:`sample_scene` unless ``holdout_ok``."""


def _check_choice(name: str, value: object, allowed: tuple[str, ...] | dict) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: unknown {value!r}; allowed: {', '.join(allowed)}")


@dataclass
class ObjectSpec:
    """One object: what it is, how it moves, where it starts (centre, fractions of width/height)."""

    colour: str
    shape: str
    motion: str
    speed: str = "slowly"
    size: float = 0.22
    start: tuple[float, float] = (0.5, 0.5)

    def __post_init__(self) -> None:
        _check_choice("colour", self.colour, PALETTE)
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("motion", self.motion, MOTIONS)
        _check_choice("speed", self.speed, SPEEDS)
        if not 0.05 <= self.size <= 0.6:
            raise ValueError(f"size: must be in [0.05, 0.6] (fraction of the frame), got {self.size}")
        self.start = (float(self.start[0]), float(self.start[1]))


@dataclass
class Scene:
    """One clip: one or two objects, a background (plain or vertical gradient), an optional camera pan."""

    objects: list[ObjectSpec]
    background: str
    gradient: bool = False
    camera_pan: str | None = None  # "left" / "right": the camera turns that way, the scene moves the other

    def __post_init__(self) -> None:
        _check_choice("background", self.background, BACKGROUNDS)
        if self.camera_pan is not None:
            _check_choice("camera_pan", self.camera_pan, PANS)
        if not 1 <= len(self.objects) <= 2:
            raise ValueError(f"objects: one or two allowed, got {len(self.objects)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        objects = [ObjectSpec(**{**o, "start": tuple(o["start"])}) for o in data["objects"]]
        return cls(objects, data["background"], bool(data["gradient"]), data.get("camera_pan"))


# ---------------------------------------------------------------------------------------------
# Backgrounds and the contrast rule


def background_profile(background: str, gradient: bool, height: int) -> np.ndarray:
    """Per-row background colour ``[H, 3]`` float: plain, or a vertical ramp to a darker/lighter shade."""
    _check_choice("background", background, BACKGROUNDS)
    base = np.array(BACKGROUNDS[background], float)
    if not gradient:
        return np.repeat(base[None], height, axis=0)
    luminance = float(base @ np.array([0.299, 0.587, 0.114]))
    other = base * 0.7 if luminance > 110 else base + (255 - base) * 0.25
    ramp = np.linspace(0.0, 1.0, height)[:, None]
    return base * (1 - ramp) + other * ramp


def contrast(colour: str, background: str, gradient: bool = False) -> float:
    """Smallest RGB distance between an object colour and any row of the background."""
    _check_choice("colour", colour, PALETTE)
    rows = background_profile(background, gradient, 2)
    return float(np.linalg.norm(rows - np.array(PALETTE[colour], float), axis=1).min())


def allowed_background(colour: str, background: str, gradient: bool = False) -> bool:
    """The contrast rule: never the object's own colour, nor one within ``MIN_CONTRAST`` of it."""
    return colour != background and contrast(colour, background, gradient) >= MIN_CONTRAST


def is_held_out(obj: ObjectSpec) -> bool:
    return (obj.colour, obj.shape, obj.motion) in HELD_OUT


# ---------------------------------------------------------------------------------------------
# Motion over normalised time


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


def _path_bounds(obj: ObjectSpec, pan: str | None) -> tuple[float, float, float, float, float]:
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


def _place(
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
    lo_dx, hi_dx, lo_dy, hi_dy, half = _path_bounds(obj, pan)
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


# ---------------------------------------------------------------------------------------------
# Sampling scenes

STATIC_MOTIONS = ("growing", "shrinking", "rotating", "still")  # the motions a camera pan may join
SIDE_BY_SIDE_MOTIONS = ("moving up", "moving down", "bouncing", *STATIC_MOTIONS)
STACKED_MOTIONS = ("moving left", "moving right", *STATIC_MOTIONS)


def _draw_object(rng: np.random.Generator, motions: tuple[str, ...], max_size: float) -> ObjectSpec:
    shape = str(rng.choice(SHAPES))
    motion = str(rng.choice(motions))
    if shape == "circle" and motion == "rotating":  # a turning circle looks still: never captioned
        motion = "still"
    return ObjectSpec(
        colour=str(rng.choice(tuple(PALETTE))),
        shape=shape,
        motion=motion,
        speed=str(rng.choice(SPEEDS)),
        size=round(float(rng.uniform(SIZE_RANGE[0], max_size)), 4),
    )


def _lay_out(
    objects: list[ObjectSpec], rng: np.random.Generator, pan: str | None, path_jitter: float | None
) -> bool:
    """One object anywhere; two side by side (vertical motions) or stacked (horizontal motions)."""
    if len(objects) == 1:
        return _place(objects[0], rng, (0.0, 1.0, 0.0, 1.0), pan, path_jitter)
    if any(o.motion in ("moving left", "moving right") for o in objects):
        regions = [(0.0, 1.0, 0.0, 0.5), (0.0, 1.0, 0.5, 1.0)]
    else:
        regions = [(0.0, 0.5, 0.0, 1.0), (0.5, 1.0, 0.0, 1.0)]
    return all(_place(o, rng, r, pan, path_jitter) for o, r in zip(objects, regions, strict=True))


def sample_scene(
    rng: np.random.Generator,
    holdout_ok: bool = False,
    two_objects: float = 0.3,
    path_jitter: float | None = None,
) -> Scene:
    """Draw one scene that obeys the contrast rule and keeps objects in frame.

    Held-out (colour, shape, motion) triples are rejected unless ``holdout_ok``; two objects never share
    a colour (the caption and the evaluator tell them apart by colour). ``path_jitter`` (a fraction of
    the frame) centres every path in its region up to that offset: then where an object is in each frame
    follows from its words, which a small model learns far more easily than a direction whose start
    position only the noise decides (docs/synthetic_world.md). None places paths anywhere they fit.
    """
    if not 0.0 <= two_objects <= 1.0:
        raise ValueError(f"two_objects: must be a probability in [0, 1], got {two_objects}")
    _check_path_jitter(path_jitter)
    while True:
        if rng.random() < two_objects:
            motions = SIDE_BY_SIDE_MOTIONS if rng.random() < 0.5 else STACKED_MOTIONS
            objects = [_draw_object(rng, motions, 0.22) for _ in range(2)]
            if objects[0].colour == objects[1].colour:
                continue
        else:
            objects = [_draw_object(rng, MOTIONS, SIZE_RANGE[1])]
        background = str(rng.choice(tuple(BACKGROUNDS)))
        gradient = bool(rng.random() < 0.3)
        pan = None
        if len(objects) == 1 and objects[0].motion in STATIC_MOTIONS and rng.random() < 0.25:
            pan = str(rng.choice(PANS))
        if not all(allowed_background(o.colour, background, gradient) for o in objects):
            continue
        if not holdout_ok and any(is_held_out(o) for o in objects):
            continue
        if not _lay_out(objects, rng, pan, path_jitter):
            continue
        return Scene(objects=objects, background=background, gradient=gradient, camera_pan=pan)


def _check_path_jitter(path_jitter: float | None) -> None:
    if path_jitter is None:
        return
    if (
        isinstance(path_jitter, bool)
        or not isinstance(path_jitter, int | float)
        or not 0 <= path_jitter <= 0.5
    ):
        raise ValueError(
            f"path_jitter: must be None or a fraction of the frame in [0, 0.5], got {path_jitter!r}"
        )


_SPEC_SIZES = {"small": 0.19, "large": 0.28, None: 0.23}
_LAYOUTS = (
    [(0.0, 1.0, 0.0, 1.0)],
    [(0.0, 0.5, 0.0, 1.0), (0.5, 1.0, 0.0, 1.0)],
    [(0.0, 1.0, 0.0, 0.5), (0.0, 1.0, 0.5, 1.0)],
    [(0.0, 1.0, 0.0, 1.0), (0.0, 1.0, 0.0, 1.0)],
)


def scene_from_spec(spec: dict, rng: np.random.Generator) -> Scene:
    """A renderable scene showing a parsed prompt (the evaluator's oracle): unsaid speed is "slowly", an
    unsaid background one the contrast rule allows; objects shrink until their paths fit the frame."""
    if not isinstance(spec, dict) or not spec.get("objects"):
        raise ValueError("spec: expected a parse_prompt() dict with at least one object")
    colours = [o["colour"] for o in spec["objects"]]
    background = spec.get("background")
    if background is None:
        background = str(
            rng.choice([b for b in BACKGROUNDS if all(allowed_background(c, b) for c in colours)])
        )
    pan = spec.get("camera_pan")
    for shrink in (1.0, 0.85, 0.7, 0.55):
        for layout in _LAYOUTS:
            if len(layout) != len(colours):
                continue
            objects = [
                ObjectSpec(
                    o["colour"],
                    o["shape"],
                    o["motion"],
                    o.get("speed") or "slowly",
                    _SPEC_SIZES[o.get("size")] * shrink * (0.85 if len(colours) == 2 else 1.0),
                )
                for o in spec["objects"]
            ]
            if all(_place(o, rng, r, pan) for o, r in zip(objects, layout, strict=True)):
                return Scene(objects, background, bool(spec.get("gradient")), pan)
    raise ValueError("spec: the objects' paths do not fit in the frame together")


# ---------------------------------------------------------------------------------------------
# Rendering


def shape_outline(
    shape: str, cx: float, cy: float, radius: float, angle_deg: float
) -> list[tuple[float, float]]:
    """Polygon vertices of a square, triangle or star (pixels); rotation clockwise on screen."""
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
    raise ValueError(f"shape: no outline for {shape!r}; allowed: square, triangle, star")


def _object_geometry(
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
        alpha, rows, cols = _object_alpha(obj.shape, *_object_geometry(scene, obj, size, tau), size)
        a = alpha[..., None]
        image[rows, cols] = image[rows, cols] * (1 - a) + np.array(PALETTE[obj.colour], float) * a
    return np.clip(image.round(), 0, 255).astype(np.uint8)


def _check_clip_args(size: int, frames: int) -> None:
    if not isinstance(size, int) or size < 32 or size % 2:
        raise ValueError(f"size: must be an even int >= 32 (pixels), got {size!r}")
    if not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames: must be an int >= 2, got {frames!r}")


def render_clip(scene: Scene, size: int = 128, frames: int = 16) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 spanning normalised time 0..1 (the same motion at any frame count)."""
    _check_clip_args(size, frames)
    still = None if scene.camera_pan else _background_image(scene, size, 0.0)
    return np.stack([render_frame(scene, size, t / (frames - 1), still) for t in range(frames)])


def _box(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[float]:
    if shape == "circle":
        return [cx - radius, cy - radius, cx + radius, cy + radius]
    xs, ys = zip(*shape_outline(shape, cx, cy, radius, angle), strict=True)
    return [min(xs), min(ys), max(xs), max(ys)]


def ground_truth(scene: Scene, size: int, frames: int) -> dict:
    """The scene spec plus per-frame on-screen centroid, box (x0, y0, x1, y1), radius and angle (pixels)."""
    _check_clip_args(size, frames)
    tracks = []
    for obj in scene.objects:
        rows = []
        for t in range(frames):
            cx, cy, radius, angle = _object_geometry(scene, obj, size, t / (frames - 1))
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
        "palette": {o.colour: list(PALETTE[o.colour]) for o in scene.objects},
        "background_rgb": list(BACKGROUNDS[scene.background]),
        "size": size,
        "frames": frames,
        "tracks": tracks,
    }


# ---------------------------------------------------------------------------------------------
# Captions

MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "moving right": ("moving right", "sliding to the right", "going right"),
    "moving left": ("moving left", "sliding to the left", "going left"),
    "moving up": ("moving up", "rising", "going up"),
    "moving down": ("moving down", "falling", "going down"),
    "moving up-right": ("moving up and to the right", "moving up-right"),
    "moving up-left": ("moving up and to the left", "moving up-left"),
    "moving down-right": ("moving down and to the right", "moving down-right"),
    "moving down-left": ("moving down and to the left", "moving down-left"),
    "growing": ("growing", "getting bigger"),
    "shrinking": ("shrinking", "getting smaller"),
    "rotating": ("rotating", "spinning"),
    "bouncing": ("bouncing", "bouncing up and down"),
    "still": ("standing still", "resting"),
}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars"}


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def size_word(size: float) -> str | None:
    """ "small" / "large" at the ends of the size range, None in between (the caption stays silent)."""
    return next((w for w, (lo, hi) in SIZE_WORDS.items() if lo <= size < hi), None)


def scene_spec(scene: Scene) -> dict:
    """The scene as :func:`parse_prompt` would read its caption (what the evaluator scores against)."""
    return {
        "objects": [
            {
                "colour": o.colour,
                "shape": o.shape,
                "motion": o.motion,
                "speed": None if o.motion == "still" else o.speed,
                "size": size_word(o.size),
            }
            for o in scene.objects
        ],
        "background": scene.background,
        "gradient": scene.gradient,
        "camera_pan": scene.camera_pan,
        "count": len(scene.objects),
    }


def _background_phrase(scene: Scene, lead: str) -> str:
    name = f"{scene.background} gradient background" if scene.gradient else f"{scene.background} background"
    if lead == "comma":
        return f", {name}"
    preposition = "on" if lead == "on" else "against"
    return f" {preposition} {article(name)} {name}"


def _motion_phrase(obj: ObjectSpec, rng: np.random.Generator) -> str:
    phrase = str(rng.choice(MOTION_PHRASES[obj.motion]))
    if obj.motion != "still" and rng.random() < 0.5:
        phrase = f"{phrase} {obj.speed}"
    return phrase


def _noun_phrase(obj: ObjectSpec, rng: np.random.Generator) -> str:
    word = size_word(obj.size)
    noun = f"{word} {obj.colour} {obj.shape}" if word and rng.random() < 0.5 else f"{obj.colour} {obj.shape}"
    return f"{article(noun)} {noun} {_motion_phrase(obj, rng)}"


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption from the documented grammar; the phrasing varies with ``rng``, the content never does."""
    lead = str(rng.choice(("on", "comma", "against")))
    if len(scene.objects) == 1:
        body = _noun_phrase(scene.objects[0], rng)
        pan = ""
        if scene.camera_pan:
            forms = (f", camera panning {scene.camera_pan}", f" as the camera pans {scene.camera_pan}")
            pan = str(rng.choice(forms))
        return f"{body}{_background_phrase(scene, lead)}{pan}"
    a, b = scene.objects
    lead = "comma" if lead == "against" else lead
    if a.shape == b.shape and rng.random() < 0.7:
        ones = [f"{article(o.colour)} {o.colour} one {_motion_phrase(o, rng)}" for o in (a, b)]
        return f"two {PLURAL[a.shape]}, {ones[0]} and {ones[1]}{_background_phrase(scene, 'comma')}"
    return f"{_noun_phrase(a, rng)} and {_noun_phrase(b, rng)}{_background_phrase(scene, lead)}"


def holdout_prompts() -> list[str]:
    """One plain prompt per held-out triple, on the first background (this order) that suits its colour."""
    out = []
    for colour, shape, motion in HELD_OUT:
        background = next(
            b for b in ("gray", "navy", "beige", "teal", "black") if allowed_background(colour, b)
        )
        phrase = MOTION_PHRASES[motion][0]
        out.append(
            f"{article(colour)} {colour} {shape} {phrase} on {article(background)} {background} background"
        )
    return out


# ---------------------------------------------------------------------------------------------
# Parsing prompts (the inverse of ``caption``, tolerant of simple user phrasings)

_SPEED_WORDS = {
    "slowly": "slowly",
    "slow": "slowly",
    "quickly": "quickly",
    "fast": "quickly",
    "rapidly": "quickly",
}
_SIZE_ALIASES = {"small": "small", "tiny": "small", "little": "small", "large": "large", "big": "large"}
_STATIC_PATTERNS: dict[str, str] = {
    "bouncing": r"\b(?:bouncing|bounces|bounce|hopping|hops)(?: up and down)?\b",
    "growing": r"\b(?:growing|grows|getting bigger|expanding|expands|enlarging)\b",
    "shrinking": r"\b(?:shrinking|shrinks|getting smaller|contracting|contracts)\b",
    "rotating": r"\b(?:rotating|rotates|spinning|spins|turning|turns)\b",
    "still": r"\b(?:standing still|sitting still|staying still|resting|not moving|stationary|static|"
    r"motionless|still)\b",
}
_UP = {"up", "upward", "upwards", "rising", "rises", "climbing", "climbs", "ascending", "upper", "top"}
_DOWN = {"down", "downward", "downwards", "falling", "falls", "dropping", "drops", "sinking", "sinks"}
_DOWN |= {"descending", "lower", "bottom"}
_VERBS = {"moving", "moves", "move", "sliding", "slides", "going", "goes", "drifting", "drifts", "heading"}
_VERBS |= {"heads", "travelling", "traveling", "diagonally", "flying", "flies", "gliding", "glides"}
_FILLER = {"to", "the", "and", "towards", "toward", "is", "which", "that", "it", "a", "an", "in", "while"}
_FILLER |= {"direction", "corner", "side", "of", "frame", "screen"}


def _normalise(text: str) -> str:
    text = text.lower().replace("grey", "gray").replace("-", " ")
    text = re.sub(r"[^a-z, ]+", " ", text)
    return re.sub(r"\s+", " ", re.sub(r"\s*,\s*", ", ", text)).strip(" ,")


def _parse_motion(rest: str) -> tuple[str, str | None] | None:
    """(motion, speed) from the words after the shape, or None if any word is outside the grammar."""
    speed = None
    words = []
    for word in rest.replace(",", " ").split():
        if word in _SPEED_WORDS:
            speed = _SPEED_WORDS[word]
        else:
            words.append(word)
    text = " ".join(words)
    found = [m for m, pattern in _STATIC_PATTERNS.items() if re.search(pattern, text)]
    if found:
        motion = found[0]
        text = re.sub(_STATIC_PATTERNS[motion], " ", text)
        if any(w not in _FILLER for w in text.split()):
            return None
        return motion, (None if motion == "still" else speed)
    tokens = text.split()
    vertical = {"up" for w in tokens if w in _UP} | {"down" for w in tokens if w in _DOWN}
    horizontal = {w for w in tokens if w in ("left", "right")}
    if any(w not in _UP | _DOWN | _VERBS | _FILLER | {"left", "right"} for w in tokens):
        return None
    if len(vertical) > 1 or len(horizontal) > 1:
        return None
    if not vertical and not horizontal:
        return ("still", None) if not any(w in _VERBS for w in tokens) else None
    return "moving " + "-".join([*sorted(vertical), *sorted(horizontal)]), speed


_COLOURS_RE = "|".join(PALETTE)
_SIZES_RE = "|".join(_SIZE_ALIASES)
_SHAPES_RE = "|".join(SHAPES)
_OBJECT_RE = re.compile(
    rf"^(?:(?:a|an|the|one) )?(?:({_SIZES_RE}) )?({_COLOURS_RE}) (?:({_SIZES_RE}) )?({_SHAPES_RE})\b(.*)$"
)
_BACKGROUND_RE = re.compile(
    rf"(?:,|\b(?:on|against|over|with|in front of))? ?(?:(?:a|an|the) )?(?:plain )?"
    rf"({'|'.join(BACKGROUNDS)})( gradient)? (?:background|backdrop)\b"
)
_PAN_RE = re.compile(
    r"(?:,? ?(?:with (?:a |the )?)?camera (?:is )?(?:panning|pans|pan)|,? ?(?:as|while) the camera pans)"
    r" (left|right)\b"
)


def _parse_object(text: str) -> dict | None:
    match = _OBJECT_RE.match(text.strip(" ,"))
    if not match:
        return None
    motion = _parse_motion(match.group(5))
    if motion is None:
        return None
    size = match.group(1) or match.group(3)
    return {
        "colour": match.group(2),
        "shape": match.group(4),
        "motion": motion[0],
        "speed": motion[1],
        "size": _SIZE_ALIASES[size] if size else None,
    }


def _parse_objects(body: str) -> list[dict] | None:
    two = re.match(rf"^two ({'|'.join(PLURAL.values())}),? (.*)$", body)
    if two:
        shape = next(s for s, p in PLURAL.items() if p == two.group(1))
        parts = re.split(rf",? and (?=(?:a |an |the )?(?:{_COLOURS_RE}) one\b)", two.group(2))
        if len(parts) != 2:
            return None
        objects = []
        for part in parts:
            one = re.match(rf"^(?:a |an |the )?({_COLOURS_RE}) one\b(.*)$", part.strip(" ,"))
            parsed = _parse_object(f"{one.group(1)} {shape}{one.group(2)}") if one else None
            if parsed is None:
                return None
            objects.append(parsed)
        return objects
    size = rf"(?:(?:{_SIZES_RE}) )?"
    lead = rf"(?:a |an |the |one )?{size}(?:{_COLOURS_RE}) {size}(?:{_SHAPES_RE})\b"
    parts = re.split(rf",? and (?={lead})", body)
    if len(parts) > 2:
        return None
    objects = [_parse_object(part) for part in parts]
    return None if any(o is None for o in objects) else objects


def parse_prompt(text: str) -> dict | None:
    """Read a prompt of the grammar back into a spec, or None if it is outside the grammar.

    The spec is ``{"objects": [{colour, shape, motion, speed, size}], "background", "gradient",
    "camera_pan", "count"}``; ``speed``/``size`` are None when the prompt does not say, and ``background``
    and ``gradient`` are None when no background is named (the evaluator then does not score it).
    """
    if not isinstance(text, str):
        raise ValueError(f"text: expected a prompt string, got {type(text).__name__}")
    text = _normalise(text)
    pans = _PAN_RE.findall(text)
    if len(pans) > 1:
        return None
    text = _PAN_RE.sub("", text)
    backgrounds = list(_BACKGROUND_RE.finditer(text))
    if len(backgrounds) > 1:
        return None
    background, gradient = None, None
    if backgrounds:
        match = backgrounds[0]
        if text[match.end() :].strip(" ,"):
            return None  # the background closes the prompt (a pan may follow, removed above)
        background, gradient = match.group(1), bool(match.group(2))
        text = text[: match.start()]
    objects = _parse_objects(text.strip(" ,"))
    if not objects:
        return None
    return {
        "objects": objects,
        "background": background,
        "gradient": gradient,
        "camera_pan": pans[0] if pans else None,
        "count": len(objects),
    }


# ---------------------------------------------------------------------------------------------
# Shards


def encode_mp4(frames: np.ndarray, fps: int = 8, crf: int = 12) -> bytes:
    """H.264 (yuv420p, the format players expect) at a low CRF so the palette colours survive."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def decode_mp4(data: bytes) -> np.ndarray:
    """All frames of an in-memory MP4 as ``[T, H, W, 3]`` uint8."""
    import av

    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of clip ``index``: independent of how many clips came before or per shard."""
    return np.random.default_rng([seed, index])


def make_sample(
    seed: int, index: int, size: int = 128, frames: int = 16, path_jitter: float | None = None
) -> tuple[np.ndarray, str, dict]:
    """(frames, caption, ground truth) of training clip ``index`` (never a held-out triple)."""
    rng = clip_rng(seed, index)
    scene = sample_scene(rng, path_jitter=path_jitter)
    text = caption(scene, rng)
    truth = ground_truth(scene, size, frames)
    truth["caption"] = text
    return render_clip(scene, size, frames), text, truth


def _check_positive(name: str, value: object, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: must be an int >= {minimum}, got {value!r}")


def _write_tar(
    tmp: Path, seed: int, indices: range, size: int, frames: int, fps: int, path_jitter: float | None
) -> None:
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for index in indices:
            clip, text, truth = make_sample(seed, index, size, frames, path_jitter)
            for ext, data in (
                ("mp4", encode_mp4(clip, fps)),
                ("txt", text.encode()),
                ("json", json.dumps(truth, sort_keys=True).encode()),
            ):
                info = tarfile.TarInfo(f"{index:08d}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))


def write_shards(
    out_dir: str | Path,
    videos: int,
    size: int = 128,
    frames: int = 16,
    seed: int = 0,
    shard_size: int = 1000,
    fps: int = 8,
    path_jitter: float | None = None,
) -> list[Path]:
    """Write ``videos`` clips as WebDataset tars ``shard-000000.tar``... plus ``manifest.json``.

    Each sample ``%08d`` holds ``mp4`` (H.264), ``txt`` (caption) and ``json`` (ground truth). Files are
    written to a temp name and renamed, so a crash never leaves a half shard; the same seed gives the same
    captions, JSON and frames.
    """
    _check_positive("videos", videos)
    _check_clip_args(size, frames)
    _check_positive("shard_size", shard_size)
    _check_positive("fps", fps)
    _check_positive("seed", seed, 0)
    _check_path_jitter(path_jitter)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for number, first in enumerate(range(0, videos, shard_size)):
        path = out / f"shard-{number:06d}.tar"
        indices = range(first, min(videos, first + shard_size))
        atomic_write(path, lambda tmp, i=indices: _write_tar(tmp, seed, i, size, frames, fps, path_jitter))
        shards.append(path)
    manifest = {
        "videos": videos,
        "size": size,
        "frames": frames,
        "fps": fps,
        "seed": seed,
        "shard_size": shard_size,
        "path_jitter": path_jitter,
        "shards": [p.name for p in shards],
        "held_out": [list(h) for h in HELD_OUT],
        "palette": {k: list(v) for k, v in PALETTE.items()},
        "backgrounds": {k: list(v) for k, v in BACKGROUNDS.items()},
    }
    text = json.dumps(manifest, indent=2, sort_keys=True)
    atomic_write(out / "manifest.json", lambda tmp: tmp.write_text(text))
    return shards
