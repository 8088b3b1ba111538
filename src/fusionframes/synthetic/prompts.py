"""Parsing prompts back into scene specs: the inverse of the caption grammar, tolerant of simple user
phrasings. The evaluator scores a video against what this reads from its prompt.
"""

from __future__ import annotations

import re

from fusionframes.synthetic.captions import PLURAL
from fusionframes.synthetic.world import ALL_SHAPES, BACKGROUNDS, COLOURS

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


_COLOURS_RE = "|".join(COLOURS)
_SIZES_RE = "|".join(_SIZE_ALIASES)
_SHAPES_RE = "|".join(ALL_SHAPES)
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
