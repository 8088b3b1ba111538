"""Captions from the documented grammar: the phrasing varies with the generator, the content never
does; :func:`scene_spec` is the scene as :func:`~fusionframes.synthetic.prompts.parse_prompt` reads it.
"""

from __future__ import annotations

import re

import numpy as np

from fusionframes.synthetic.world import HELD_OUT, SIZE_WORDS, ObjectSpec, Scene, allowed_background

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
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "oval": "ovals"}


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
# Played backwards: every motion reversed is another motion of the grammar (right <-> left, rising <->
# falling, growing <-> shrinking, the camera's pan); bouncing, rotating and still read the same both ways.

REVERSED_WORDS = {
    "left": "right",
    "right": "left",
    "up": "down",
    "down": "up",
    "upwards": "downwards",
    "downwards": "upwards",
    "rising": "falling",
    "falling": "rising",
    "rises": "falls",
    "falls": "rises",
    "growing": "shrinking",
    "shrinking": "growing",
    "grows": "shrinks",
    "shrinks": "grows",
    "bigger": "smaller",
    "smaller": "bigger",
}
_WORD = re.compile(r"[A-Za-z]+")


def reverse_caption(caption: str) -> str:
    """The caption of ``caption``'s clip played backwards: each direction word becomes its opposite."""

    def swap(match: re.Match[str]) -> str:
        word = match.group()
        opposite = REVERSED_WORDS.get(word.lower())
        if opposite is None:
            return word
        return opposite.capitalize() if word[0].isupper() else opposite

    return _WORD.sub(swap, caption)
