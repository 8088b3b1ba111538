"""The synthetic captioned-video world: coloured shapes moving on plain or gradient backgrounds.

Every clip is drawn from a seed (numpy Generator, no global state), so shards are reproducible. Motion
is defined over normalised time 0..1, so a clip of any length shows the same movement. A documented
list of held-out (colour, shape, motion) combinations never appears in training shards; the evaluator
uses them to measure generalisation. Ground truth (boxes, centroids, colours, motion) goes into each
sample's JSON.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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
SHAPES = ("circle", "square", "triangle", "star")
DIRECTIONS: dict[str, tuple[float, float]] = {  # unit screen vectors (x right, y down)
    "moving right": (1, 0),
    "moving left": (-1, 0),
    "moving up": (0, -1),
    "moving down": (0, 1),
    "moving up-right": (0.7071, -0.7071),
    "moving up-left": (-0.7071, -0.7071),
    "moving down-right": (0.7071, 0.7071),
    "moving down-left": (-0.7071, 0.7071),
}
MOTIONS = (*DIRECTIONS, "growing", "shrinking", "rotating", "bouncing", "still")
SPEEDS = {"slowly": 0.3, "quickly": 0.5}  # fraction of the frame crossed over the clip
MIN_CONTRAST = 110.0  # RGB distance between an object and its background

HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("red", "star", "moving down"),
    ("blue", "triangle", "moving right"),
    ("green", "circle", "moving up"),
    ("yellow", "square", "moving left"),
    ("purple", "star", "moving up-right"),
    ("orange", "triangle", "moving down-left"),
    ("white", "square", "growing"),
    ("black", "circle", "moving left"),
)


@dataclass
class ObjectSpec:
    colour: str
    shape: str
    motion: str
    speed: str = "slowly"
    start: tuple[float, float] = (0.5, 0.5)  # centre at time 0, fractions of width/height
    size: float = 0.22  # side of the bounding box as a fraction of the frame


@dataclass
class Scene:
    objects: list[ObjectSpec]
    background: str
    gradient: bool = False
    camera_pan: str | None = None  # None, "left" or "right"
    extras: dict = field(default_factory=dict)


def _contrast(colour: str, background: str) -> float:
    a, b = np.array(PALETTE[colour], float), np.array(BACKGROUNDS[background], float)
    return float(np.linalg.norm(a - b))


def allowed_background(colour: str, background: str) -> bool:
    """Never the object's own colour, nor one too close to it to see."""
    return colour != background and _contrast(colour, background) >= MIN_CONTRAST


def is_held_out(obj: ObjectSpec) -> bool:
    return (obj.colour, obj.shape, obj.motion) in HELD_OUT


def displacement(obj: ObjectSpec) -> tuple[float, float]:
    """Total screen displacement over the clip (fractions of the frame)."""
    if obj.motion not in DIRECTIONS:
        return (0.0, 0.0)
    dx, dy = DIRECTIONS[obj.motion]
    return (dx * SPEEDS[obj.speed], dy * SPEEDS[obj.speed])


def _start_for(obj_motion: str, speed: str, rng: np.random.Generator, size: float) -> tuple[float, float]:
    """A start that keeps the whole path inside the frame."""
    dx, dy = DIRECTIONS.get(obj_motion, (0.0, 0.0))
    travel = SPEEDS[speed] if obj_motion in DIRECTIONS else 0.0
    margin = size / 2 + 0.04
    lo_x = margin - min(0.0, dx * travel)
    hi_x = 1 - margin - max(0.0, dx * travel)
    lo_y = margin - min(0.0, dy * travel) + (0.18 if obj_motion == "bouncing" else 0.0)
    hi_y = 1 - margin - max(0.0, dy * travel)
    if obj_motion == "growing":
        lo_x, hi_x, lo_y, hi_y = 0.35, 0.65, 0.35, 0.65
    return (float(rng.uniform(lo_x, max(lo_x, hi_x))), float(rng.uniform(lo_y, max(lo_y, hi_y))))


def sample_scene(rng: np.random.Generator, holdout_ok: bool = False, two_objects: float = 0.25) -> Scene:
    """Draw one scene; held-out combinations are rejected unless ``holdout_ok``."""
    while True:
        count = 2 if rng.random() < two_objects else 1
        objects = []
        for _ in range(count):
            motion = str(rng.choice(MOTIONS))
            speed = str(rng.choice(tuple(SPEEDS)))
            size = 0.22 if count == 1 else 0.18
            obj = ObjectSpec(
                colour=str(rng.choice(tuple(PALETTE))),
                shape=str(rng.choice(SHAPES)),
                motion=motion,
                speed=speed,
                start=(0.0, 0.0),
                size=size,
            )
            objects.append(obj)
        if count == 2:
            if objects[0].colour == objects[1].colour:
                continue
            # keep the two apart: left and right halves
            for k, obj in enumerate(objects):
                obj.motion = str(
                    rng.choice(
                        ("moving up", "moving down", "growing", "shrinking", "rotating", "still", "bouncing")
                    )
                )
                x = 0.27 if k == 0 else 0.73
                y = _start_for(obj.motion, obj.speed, rng, obj.size)[1]
                obj.start = (x, y)
        else:
            objects[0].start = _start_for(objects[0].motion, objects[0].speed, rng, objects[0].size)
        background = str(rng.choice(tuple(BACKGROUNDS)))
        if not all(allowed_background(o.colour, background) for o in objects):
            continue
        if not holdout_ok and any(is_held_out(o) for o in objects):
            continue
        gradient = bool(rng.random() < 0.3)
        pan = None
        if (
            count == 1
            and objects[0].motion in ("still", "growing", "shrinking", "rotating")
            and rng.random() < 0.2
        ):
            pan = str(rng.choice(("left", "right")))
        return Scene(objects=objects, background=background, gradient=gradient, camera_pan=pan)


# ---------------------------------------------------------------------------------------------
# Rendering


def _shape_points(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        r = radius * math.sqrt(2)  # corner distance of a square of side 2 * radius
        corners = [math.pi / 4 + k * math.pi / 2 + angle for k in range(4)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if shape == "triangle":
        return [
            (
                cx + radius * 1.15 * math.cos(-math.pi / 2 + angle + k * 2 * math.pi / 3),
                cy + radius * 1.15 * math.sin(-math.pi / 2 + angle + k * 2 * math.pi / 3) + radius * 0.15,
            )
            for k in range(3)
        ]
    if shape == "star":
        points = []
        for k in range(10):
            r = radius * 1.2 if k % 2 == 0 else radius * 0.5
            a = -math.pi / 2 + angle + k * math.pi / 5
            points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return points
    raise ValueError(f"shape: unknown {shape!r}; allowed: {', '.join(SHAPES)}")


def object_state(obj: ObjectSpec, tau: float) -> tuple[float, float, float, float]:
    """(centre x, centre y, scale, angle) at normalised time ``tau`` (fractions of the frame)."""
    x0, y0 = obj.start
    dx, dy = displacement(obj)
    x, y, scale, angle = x0 + dx * tau, y0 + dy * tau, 1.0, 0.0
    fast = obj.speed == "quickly"
    if obj.motion == "growing":
        scale = 0.6 + (0.9 if fast else 0.6) * tau
    elif obj.motion == "shrinking":
        scale = (1.5 if fast else 1.2) - (0.9 if fast else 0.6) * tau
    elif obj.motion == "rotating":
        angle = (math.pi if fast else math.pi / 2) * tau
    elif obj.motion == "bouncing":
        y = y0 - (0.22 if fast else 0.15) * abs(math.sin(2 * math.pi * tau))
    return x, y, scale, angle


def _background(scene: Scene, size: int) -> np.ndarray:
    base = np.array(BACKGROUNDS[scene.background], float)
    image = np.empty((size, size, 3))
    if scene.gradient:
        other = base * 0.6 if base.mean() > 100 else np.minimum(base * 1.6 + 25, 255)
        ramp = np.linspace(0, 1, size)[:, None, None]
        image[:] = base * (1 - ramp) + other * ramp
    else:
        image[:] = base
    return image


def render_frame(scene: Scene, size: int, tau: float, supersample: int = 4) -> np.ndarray:
    """One frame ``[H, W, 3]`` uint8; shapes are drawn at ``supersample``x then averaged (anti-aliased)."""
    big = size * supersample
    shift = 0.0
    if scene.camera_pan is not None:  # the camera pans left -> the scene moves right on screen
        shift = (0.15 if scene.camera_pan == "left" else -0.15) * tau
    layers = []
    for obj in scene.objects:
        x, y, scale, angle = object_state(obj, tau)
        cx, cy = (x + shift) * big, y * big
        radius = obj.size * scale * big / 2
        mask = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(mask)
        if obj.shape == "circle":
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
        else:
            draw.polygon(_shape_points(obj.shape, cx, cy, radius, angle), fill=255)
        layers.append((mask.resize((size, size), Image.BOX), obj.colour))
    image = _background(scene, size)
    for mask, colour in layers:
        alpha = np.asarray(mask, float)[..., None] / 255.0
        image = image * (1 - alpha) + np.array(PALETTE[colour], float) * alpha
    return np.clip(image.round(), 0, 255).astype(np.uint8)


def render_clip(scene: Scene, size: int = 128, frames: int = 29) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 over normalised time 0..1."""
    if frames < 2:
        raise ValueError(f"frames: must be >= 2, got {frames}")
    return np.stack([render_frame(scene, size, t / (frames - 1)) for t in range(frames)])


def ground_truth(scene: Scene, size: int, frames: int) -> dict:
    """Per-frame boxes and centroids (pixels) of every object, plus the scene spec."""
    tracks = []
    for obj in scene.objects:
        rows = []
        for t in range(frames):
            x, y, scale, _ = object_state(obj, t / (frames - 1))
            shift = 0.0
            if scene.camera_pan is not None:
                shift = (0.15 if scene.camera_pan == "left" else -0.15) * t / (frames - 1)
            half = obj.size * scale * size / 2
            cx, cy = (x + shift) * size, y * size
            rows.append(
                {
                    "centroid": [round(cx, 3), round(cy, 3)],
                    "box": [
                        round(cx - half, 2),
                        round(cy - half, 2),
                        round(cx + half, 2),
                        round(cy + half, 2),
                    ],
                }
            )
        tracks.append(rows)
    return {"scene": asdict(scene), "size": size, "frames": frames, "tracks": tracks}


# ---------------------------------------------------------------------------------------------
# Captions and their inverse

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


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A compositional caption; phrasing varies with ``rng``, content never does."""
    bg = scene.background
    bg_phrase = f"{bg} gradient background" if scene.gradient else f"{bg} background"
    pan = f", camera panning {scene.camera_pan}" if scene.camera_pan else ""

    def describe(obj: ObjectSpec, with_article: bool = True) -> str:
        motion = str(rng.choice(MOTION_PHRASES[obj.motion]))
        speed = f" {obj.speed}" if obj.motion not in ("still",) and rng.random() < 0.5 else ""
        noun = f"{obj.colour} {obj.shape}"
        return f"{_article(noun) + ' ' if with_article else ''}{noun} {motion}{speed}"

    if len(scene.objects) == 1:
        body = describe(scene.objects[0])
        if rng.random() < 0.5:
            return f"{body} on {_article(bg)} {bg_phrase}{pan}"
        return f"{body}, {bg_phrase}{pan}"
    a, b = scene.objects
    if a.shape == b.shape:
        ma, mb = (str(rng.choice(MOTION_PHRASES[o.motion])) for o in (a, b))
        return f"two {PLURAL[a.shape]}, a {a.colour} one {ma} and a {b.colour} one {mb}, {bg_phrase}"
    return f"{describe(a)} and {describe(b)}, {bg_phrase}"


_COLOUR_RE = "|".join(PALETTE)
_SHAPE_RE = "|".join(list(SHAPES) + list(PLURAL.values()))


def _motion_of(text: str) -> str | None:
    best = None
    for motion, phrases in MOTION_PHRASES.items():
        for phrase in phrases:
            if re.search(rf"\b{re.escape(phrase)}\b", text) and (best is None or len(phrase) > best[1]):
                best = (motion, len(phrase))
    return best[0] if best else None


def parse_prompt(text: str) -> dict | None:
    """Inverse of :func:`caption`: ``{"objects": [{colour, shape, motion}], "background", "count"}``.

    Returns None for prompts outside the grammar (the evaluator reports rather than guesses them).
    """
    text = text.lower().strip()
    bg_match = re.search(rf"\b({'|'.join(BACKGROUNDS)})( gradient)? (background|backdrop)\b", text)
    if not bg_match:
        return None
    background = bg_match.group(1)
    body = text[: bg_match.start()]
    two = re.match(rf"\s*two ({'|'.join(PLURAL.values())}), (.*)$", body)
    objects = []
    if two:
        shape = next(s for s, p in PLURAL.items() if p == two.group(1))
        for part in re.split(r"\band\b", two.group(2)):
            colour = re.search(rf"\b({_COLOUR_RE})\b one", part)
            motion = _motion_of(part)
            if colour and motion:
                objects.append({"colour": colour.group(1), "shape": shape, "motion": motion})
        if len(objects) != 2:
            return None
    else:
        parts = re.split(r"\band\b(?= (?:a|an) )", body)
        for part in parts:
            found = re.search(rf"\b({_COLOUR_RE}) ({'|'.join(SHAPES)})\b(.*)", part)
            if not found:
                return None
            motion = _motion_of(found.group(3)) or ("still" if not found.group(3).strip(" ,") else None)
            if motion is None:
                return None
            objects.append({"colour": found.group(1), "shape": found.group(2), "motion": motion})
    if not objects:
        return None
    return {"objects": objects, "background": background, "count": len(objects)}


def holdout_prompts() -> list[str]:
    """One plain prompt per held-out combination, on a background that suits its colour."""
    out = []
    for colour, shape, motion in HELD_OUT:
        background = next(
            b for b in ("gray", "navy", "beige", "teal", "black", "white") if allowed_background(colour, b)
        )
        out.append(
            f"{_article(colour)} {colour} {shape} {motion} on {_article(background)} {background} background"
        )
    return out


# ---------------------------------------------------------------------------------------------
# Shards


def _encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"  # no chroma subsampling: small shapes keep their colour
        stream.options = {"crf": "8", "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def clip_seed(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def make_sample(seed: int, index: int, size: int, frames: int) -> tuple[np.ndarray, str, dict]:
    rng = clip_seed(seed, index)
    scene = sample_scene(rng)
    text = caption(scene, rng)
    truth = ground_truth(scene, size, frames)
    truth["caption"] = text
    return render_clip(scene, size, frames), text, truth


def write_shards(
    out_dir: str | Path,
    videos: int,
    size: int = 128,
    frames: int = 29,
    seed: int = 0,
    shard_size: int = 1000,
    fps: int = 8,
) -> list[Path]:
    """Write ``videos`` clips as WebDataset tars (``mp4`` + ``txt`` + ``json`` per sample), atomically."""
    if videos < 1 or size < 32 or frames < 2 or shard_size < 1:
        raise ValueError("videos >= 1, size >= 32, frames >= 2 and shard_size >= 1 are required")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for shard, first in enumerate(range(0, videos, shard_size)):
        path = out / f"shard-{shard:06d}.tar"
        handle, tmp = tempfile.mkstemp(prefix=".shard-", dir=out)
        os.close(handle)
        try:
            with tarfile.open(tmp, "w") as tar:
                for index in range(first, min(videos, first + shard_size)):
                    clip, text, truth = make_sample(seed, index, size, frames)
                    key = f"{index:08d}"
                    for ext, data in (
                        ("mp4", _encode_mp4(clip, fps)),
                        ("txt", text.encode()),
                        ("json", json.dumps(truth, sort_keys=True).encode()),
                    ):
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size, info.mtime = len(data), 0
                        tar.addfile(info, io.BytesIO(data))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        shards.append(path)
    manifest = {
        "videos": videos,
        "size": size,
        "frames": frames,
        "seed": seed,
        "fps": fps,
        "shards": [p.name for p in shards],
        "held_out": [list(h) for h in HELD_OUT],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return shards
