"""The synthetic world's vocabulary and scene types: palette, backgrounds, shapes, motions, the
contrast rule and the held-out (colour, shape, motion) triples.

Every other module of the package reads these constants; the evaluator reads the same ones, so what a
prompt may ask for and what it is scored against cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

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
# Colours the built-in model never saw: drawn only when a data set asks for them (``new_colour_share``), so
# an adapter can be taught one and the evaluator can tell whether it was learned (docs/training.md, LoRA).
NEW_COLOURS: dict[str, tuple[int, int, int]] = {
    "pink": (255, 105, 180),
}
COLOURS: dict[str, tuple[int, int, int]] = {**PALETTE, **NEW_COLOURS}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "navy": (25, 35, 95),
    "beige": (225, 210, 170),
    "teal": (25, 130, 130),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
# Shapes the built-in model never saw, drawn only when a data set asks for them (``new_shape_share``): an
# oval is drawn by the MoVQ as well as a circle is (no corners for a 16x16 latent to lose), and its
# elongation is what the evaluator measures (the 2-fold harmonic of its outline).
NEW_SHAPES: tuple[str, ...] = ("oval",)
ALL_SHAPES: tuple[str, ...] = (*SHAPES, *NEW_SHAPES)
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
OVAL_AXES = (1.3, 0.7)  # semi-axes: about a circle's area (1.3 x 0.7 = 0.91), long axis horizontal at 0 deg
SHAPE_EXTENT = {"circle": 1.0, "square": SQUARE_HALF_SIDE * math.sqrt(2), "triangle": TRIANGLE_RADIUS}
SHAPE_EXTENT["star"] = STAR_RADII[0]
SHAPE_EXTENT["oval"] = OVAL_AXES[0]

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


def check_choice(name: str, value: object, allowed: tuple[str, ...] | dict) -> None:
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
        check_choice("colour", self.colour, COLOURS)
        check_choice("shape", self.shape, ALL_SHAPES)
        check_choice("motion", self.motion, MOTIONS)
        check_choice("speed", self.speed, SPEEDS)
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
        check_choice("background", self.background, BACKGROUNDS)
        if self.camera_pan is not None:
            check_choice("camera_pan", self.camera_pan, PANS)
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
    check_choice("background", background, BACKGROUNDS)
    base = np.array(BACKGROUNDS[background], float)
    if not gradient:
        return np.repeat(base[None], height, axis=0)
    luminance = float(base @ np.array([0.299, 0.587, 0.114]))
    other = base * 0.7 if luminance > 110 else base + (255 - base) * 0.25
    ramp = np.linspace(0.0, 1.0, height)[:, None]
    return base * (1 - ramp) + other * ramp


def contrast(colour: str, background: str, gradient: bool = False) -> float:
    """Smallest RGB distance between an object colour and any row of the background."""
    check_choice("colour", colour, COLOURS)
    rows = background_profile(background, gradient, 2)
    return float(np.linalg.norm(rows - np.array(COLOURS[colour], float), axis=1).min())


def allowed_background(colour: str, background: str, gradient: bool = False) -> bool:
    """The contrast rule: never the object's own colour, nor one within ``MIN_CONTRAST`` of it."""
    return colour != background and contrast(colour, background, gradient) >= MIN_CONTRAST


def is_held_out(obj: ObjectSpec) -> bool:
    return (obj.colour, obj.shape, obj.motion) in HELD_OUT
