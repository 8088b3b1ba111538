"""Drawing scenes: random training scenes that obey the contrast rule and stay in frame, and the scene
that shows a parsed prompt (the evaluator's oracle).
"""

from __future__ import annotations

import numpy as np

from fusionframes.synthetic.motion import place
from fusionframes.synthetic.world import (
    BACKGROUNDS,
    MOTIONS,
    NEW_COLOURS,
    NEW_SHAPES,
    PALETTE,
    PANS,
    SHAPES,
    SIZE_RANGE,
    SPEEDS,
    ObjectSpec,
    Scene,
    allowed_background,
    is_held_out,
)

STATIC_MOTIONS = ("growing", "shrinking", "rotating", "still")  # the motions a camera pan may join
SIDE_BY_SIDE_MOTIONS = ("moving up", "moving down", "bouncing", *STATIC_MOTIONS)
STACKED_MOTIONS = ("moving left", "moving right", *STATIC_MOTIONS)


def _draw_object(
    rng: np.random.Generator,
    motions: tuple[str, ...],
    max_size: float,
    new_colour_share: float = 0.0,
    new_shape_share: float = 0.0,
) -> ObjectSpec:
    # no extra draw at share 0, so the default data (the built-in model's) is drawn exactly as before
    new_shape = new_shape_share > 0 and rng.random() < new_shape_share
    shape = str(rng.choice(NEW_SHAPES if new_shape else SHAPES))
    motion = str(rng.choice(motions))
    if shape == "circle" and motion == "rotating":  # a turning circle looks still: never captioned
        motion = "still"
    new = new_colour_share > 0 and rng.random() < new_colour_share
    return ObjectSpec(
        colour=str(rng.choice(tuple(NEW_COLOURS if new else PALETTE))),
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
        return place(objects[0], rng, (0.0, 1.0, 0.0, 1.0), pan, path_jitter)
    if any(o.motion in ("moving left", "moving right") for o in objects):
        regions = [(0.0, 1.0, 0.0, 0.5), (0.0, 1.0, 0.5, 1.0)]
    else:
        regions = [(0.0, 0.5, 0.0, 1.0), (0.5, 1.0, 0.0, 1.0)]
    return all(place(o, rng, r, pan, path_jitter) for o, r in zip(objects, regions, strict=True))


def sample_scene(
    rng: np.random.Generator,
    holdout_ok: bool = False,
    two_objects: float = 0.3,
    path_jitter: float | None = None,
    new_colour_share: float = 0.0,
    new_shape_share: float = 0.0,
) -> Scene:
    """Draw one scene that obeys the contrast rule and keeps objects in frame.

    Held-out (colour, shape, motion) triples are rejected unless ``holdout_ok``; two objects never share
    a colour (the caption and the evaluator tell them apart by colour). ``path_jitter`` (a fraction of
    the frame) centres every path in its region up to that offset: then where an object is in each frame
    follows from its words, which a small model learns far more easily than a direction whose start
    position only the noise decides (docs/synthetic_world.md). None places paths anywhere they fit.
    ``new_colour_share``: the probability that an object takes one of ``NEW_COLOURS`` (colours outside
    the built-in vocabulary, for teaching an adapter a new word); 0 draws the palette only.
    ``new_shape_share``: the same for ``NEW_SHAPES``; 0 draws the built-in shapes only.
    """
    if not 0.0 <= two_objects <= 1.0:
        raise ValueError(f"two_objects: must be a probability in [0, 1], got {two_objects}")
    check_new_colour_share(new_colour_share)
    check_new_shape_share(new_shape_share)
    check_path_jitter(path_jitter)
    while True:
        if rng.random() < two_objects:
            motions = SIDE_BY_SIDE_MOTIONS if rng.random() < 0.5 else STACKED_MOTIONS
            objects = [_draw_object(rng, motions, 0.22, new_colour_share, new_shape_share) for _ in range(2)]
            if objects[0].colour == objects[1].colour:
                continue
        else:
            objects = [_draw_object(rng, MOTIONS, SIZE_RANGE[1], new_colour_share, new_shape_share)]
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


def check_new_colour_share(share: float) -> None:
    # below 1: two objects never share a colour, and there is one new colour to draw
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0.0 <= share < 1.0:
        raise ValueError(f"new_colour_share: must be a probability in [0, 1), got {share!r}")


def check_new_shape_share(share: float) -> None:
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0.0 <= share <= 1.0:
        raise ValueError(f"new_shape_share: must be a probability in [0, 1], got {share!r}")


def check_path_jitter(path_jitter: float | None) -> None:
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
            if all(place(o, rng, r, pan) for o, r in zip(objects, layout, strict=True)):
                return Scene(objects, background, bool(spec.get("gradient")), pan)
    raise ValueError("spec: the objects' paths do not fit in the frame together")
