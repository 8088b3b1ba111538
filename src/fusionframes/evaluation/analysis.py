"""Classic-vision analysis of a clip of the synthetic world: background, objects, shapes and motion.

No learned model is involved, so the evaluator's own error can be measured exactly on rendered clips
(:func:`fusionframes.evaluation.synthetic.ground_truth_check`). The steps:

1. Background: per-row median of the left/right border columns over all frames (gradients are vertical),
   named by the nearest of the world's plain and gradient backgrounds.
2. Segmentation: every pixel is un-mixed as ``alpha * colour + (1 - alpha) * background`` for each
   palette colour (in RGB, where anti-aliasing and blur mix linearly); a pixel belongs to the colour that
   explains it best if that colour covers at least half of it and the residual is small.
3. Objects: connected components per colour (``scipy.ndimage.label``), the largest per colour tracked
   over frames; the track's colour is then named by the nearest palette entry in CIE Lab (perceptual).
4. Shape: the radial profile r(theta) of the object's coverage around its centroid; its Fourier
   harmonics 3, 4, 5 single out triangle, square, star (rotation-invariant magnitudes), a circle has none.
   The phase of the dominant harmonic gives the orientation, hence rotation.
5. Motion: centroid displacement (8 directions), area ratio (growing / shrinking), accumulated rotation,
   vertical bounce (residual of a straight-line fit), or still.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from fusionframes.synthetic import BACKGROUNDS, COLOURS, MIN_CONTRAST, background_profile

COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)  # with the new colours: a pink blob is not "red"
_COLOURS = np.array([COLOURS[c] for c in COLOUR_NAMES], np.float32)

MIN_ALPHA = 0.5  # a pixel is an object pixel when the object covers at least half of it
MAX_RESIDUAL = 60.0  # RGB distance the un-mixing may leave unexplained (compression, model colour drift)
MIN_SEPARATION = 0.9 * MIN_CONTRAST  # colours closer than this to the background row are not segmented
MIN_AREA = 0.0012  # smallest component counted, fraction of the frame area (~20 px at 128x128)
MIN_PRESENCE = 0.5  # a colour is an object when it is found in at least this fraction of the frames
MAX_COLOUR_DELTA_E = 45.0  # a track further than this (CIE76) from every palette entry is "unknown"
CIRCLE_HARMONIC = 0.025  # circles: harmonics 3, 4, 5 of r(theta) all below this fraction of its mean
MOVE_FRACTION = 0.08  # net displacement (fraction of the frame side) above which an object moves
BOUNCE_FRACTION = 0.06  # vertical swing off a straight path (fraction of the frame) that is a bounce
GROW_RATIO = 1.6  # area ratio end / start beyond which an object grows (or 1 / it, shrinks)
ROTATE_DEG = 25.0  # accumulated turn above which an object rotates
HARMONIC_SHAPES = {3: "triangle", 4: "square", 5: "star"}
# An oval (semi-axes 1.3 : 0.7) has a 2-fold harmonic of about 0.15 and a 4-fold one of about 0.034; the
# built-in shapes' outlines have none above 0.005, but the blobs a weak model draws for them are often
# elongated: at 0.07 one in five of the built-in U-Net's objects (no layout prior) read as ovals, so the
# bar is about three quarters of a drawn oval's value.
OVAL_HARMONIC = 0.11
SHAPE_HARMONIC = {**{v: k for k, v in HARMONIC_SHAPES.items()}, "oval": 2}
SECTORS = (
    "moving right",
    "moving up-right",
    "moving up",
    "moving up-left",
    "moving left",
    "moving down-left",
    "moving down",
    "moving down-right",
)  # counter-clockwise from +x in 45 degree sectors (screen y points down)


@dataclass
class ObjectTrack:
    """One object followed over the clip (NaN centroid / zero area where it was not found)."""

    colour: str
    shape: str
    centroids: np.ndarray  # [T, 2] x, y pixels
    areas: np.ndarray  # [T] covered pixels (sub-pixel: sum of coverage)
    colour_delta_e: float
    displacement: tuple[float, float]  # fitted screen displacement over the clip, pixels
    direction: str | None  # one of SECTORS, None when the net displacement is small
    scale_ratio: float  # fitted area ratio end / start
    rotation_deg: float  # accumulated turn; 0 for circles (not measurable)
    bounce_px: float  # vertical swing off the straight-line path
    motion: str  # single best label, ignoring any camera pan
    shape_votes: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["centroids"] = [
            None if np.isnan(x) else [round(float(x), 2), round(float(y), 2)] for x, y in self.centroids
        ]
        out["areas"] = [round(float(a), 1) for a in self.areas]
        for key in ("colour_delta_e", "scale_ratio", "rotation_deg", "bounce_px"):
            out[key] = round(float(out[key]), 3)
        out["displacement"] = [round(float(v), 2) for v in self.displacement]
        out["shape_votes"] = {k: round(float(v), 3) for k, v in self.shape_votes.items()}
        return out


@dataclass
class ClipAnalysis:
    """What the evaluator sees in a clip."""

    height: int
    width: int
    frames: int
    background: str
    gradient: bool
    background_distance: float  # mean RGB distance of the estimated rows to the named background
    objects: list[ObjectTrack]
    count: int

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "objects"}
        out["background_distance"] = round(float(self.background_distance), 2)
        out["objects"] = [o.to_dict() for o in self.objects]
        return out

    def track(self, colour: str) -> ObjectTrack | None:
        return next((o for o in self.objects if o.colour == colour), None)


# ---------------------------------------------------------------------------------------------
# Colour


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0..255, last axis 3) to CIE Lab (D65): distances there follow perceived differences."""
    c = np.asarray(rgb, np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


_PALETTE_LAB = rgb_to_lab(_COLOURS)


def name_colour(rgb: np.ndarray) -> tuple[str, float]:
    """Nearest palette colour in Lab and its distance; "unknown" beyond ``MAX_COLOUR_DELTA_E``."""
    distances = np.linalg.norm(_PALETTE_LAB - rgb_to_lab(rgb), axis=-1)
    best = int(np.argmin(distances))
    name = COLOUR_NAMES[best] if distances[best] <= MAX_COLOUR_DELTA_E else "unknown"
    return name, float(distances[best])


# ---------------------------------------------------------------------------------------------
# Background


def estimate_background(frames: np.ndarray) -> np.ndarray:
    """Per-row background colour ``[H, 3]``: median of the side border columns over all frames."""
    width = frames.shape[2]
    b = max(1, width // 32)
    border = np.concatenate([frames[:, :, :b], frames[:, :, width - b :]], axis=2).astype(np.float32)
    rows = np.median(border.transpose(1, 0, 2, 3).reshape(frames.shape[1], -1, 3), axis=1)
    return ndimage.median_filter(rows, size=(5, 1), mode="nearest")


def name_background(rows: np.ndarray) -> tuple[str, bool, float]:
    """(name, gradient, mean RGB distance) of the nearest plain or gradient background of the world."""
    best = ("gray", False, math.inf)
    for name in BACKGROUNDS:
        for gradient in (False, True):
            distance = float(
                np.linalg.norm(rows - background_profile(name, gradient, len(rows)), axis=1).mean()
            )
            if distance < best[2]:
                best = (name, gradient, distance)
    return best


# ---------------------------------------------------------------------------------------------
# Segmentation


def coverage(frames: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """How much of each pixel palette colour ``k`` covers, 0..1 (projection onto background -> colour)."""
    towards = _COLOURS[k][None] - rows  # [H, 3]
    dot = np.einsum("...hwc,hc->...hw", frames.astype(np.float32) - rows[:, None, :], towards)
    return np.clip(dot / np.maximum((towards**2).sum(-1), 1.0)[:, None], 0.0, 1.0)


def unmix(frames: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Palette index ``[T, H, W]`` of every object pixel, -1 for background and mixed pixels.

    Each pixel is fitted as ``bg + alpha * (colour - bg)`` for every palette colour; it takes the colour
    with the smallest residual, if that colour covers at least ``MIN_ALPHA`` of it. Anti-aliased edges
    are mostly background, so they drop out instead of turning into thin rings of an in-between colour.
    Colours the contrast rule keeps off a background row (too close to it) are not looked for there:
    compression ringing would read as them. Only pixels far enough from the background to possibly
    pass are un-mixed (the residual is orthogonal to ``colour - bg``, so ``|pixel - bg| >= alpha * |colour
    - bg|``), which skips most of the frame.
    """
    rows = rows.astype(np.float32)
    diff = frames.astype(np.float32) - rows[None, :, None, :]
    label = np.full(frames.shape[:3], -1, np.int64)
    where = np.nonzero(np.einsum("...c,...c->...", diff, diff) >= (MIN_ALPHA * MIN_SEPARATION) ** 2)
    if not len(where[0]):
        return label
    d = diff[where]  # [N, 3]
    towards = _COLOURS[None] - rows[where[1]][:, None, :]  # [N, K, 3]
    norm2 = (towards**2).sum(-1)
    dot = np.einsum("nc,nkc->nk", d, towards)
    alpha = np.clip(dot / np.maximum(norm2, 1.0), 0.0, 1.0)
    residual2 = (d**2).sum(-1, keepdims=True) - 2 * alpha * dot + alpha**2 * norm2
    residual2 = np.where(norm2 >= MIN_SEPARATION**2, residual2, np.inf)
    best = residual2.argmin(-1)
    pick = np.arange(len(best))
    ok = (alpha[pick, best] >= MIN_ALPHA) & (residual2[pick, best] <= MAX_RESIDUAL**2)
    label[where] = np.where(ok, best, -1)
    return label


_EIGHT = np.ones((3, 3), bool)


@dataclass
class _Component:
    colour: int
    mask: np.ndarray
    area: int
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 (exclusive ends)


def _components(label: np.ndarray, min_area: float) -> list[_Component]:
    """8-connected components of every palette colour in one frame, of at least ``min_area`` pixels."""
    out = []
    for k in np.unique(label[label >= 0]):
        labels, n = ndimage.label(label == k, structure=_EIGHT)
        areas = np.bincount(labels.ravel())[1:]
        for i, box in enumerate(ndimage.find_objects(labels)):
            if areas[i] >= min_area:
                bounds = (box[0].start, box[0].stop, box[1].start, box[1].stop)
                out.append(_Component(int(k), labels == i + 1, int(areas[i]), bounds))
    return sorted(out, key=lambda c: -c.area)


def _touches(small: _Component, big: _Component, gap: int = 2) -> bool:
    y0, y1, x0, x1 = small.box
    if y1 + gap <= big.box[0] or big.box[1] + gap <= y0 or x1 + gap <= big.box[2] or big.box[3] + gap <= x0:
        return False
    ys, xs = slice(max(y0 - gap, 0), y1 + gap), slice(max(x0 - gap, 0), x1 + gap)
    grown = ndimage.binary_dilation(small.mask[ys, xs], structure=_EIGHT, iterations=gap)
    return bool((grown & big.mask[ys, xs]).any())


def drop_fringes(components: list[_Component]) -> list[_Component]:
    """Drop small components hugging a much larger one of another colour: compression and chroma
    subsampling leave such fringes along edges; objects of the world never touch."""
    return [
        c
        for c in components
        if not any(b.area >= 4 * c.area and b.colour != c.colour and _touches(c, b) for b in components)
    ]


# ---------------------------------------------------------------------------------------------
# Shape and orientation


def radial_profile(coverage: np.ndarray, cx: float, cy: float, rays: int = 64) -> np.ndarray:
    """r(theta) of a star-shaped blob: coverage integrated along ``rays`` rays from the centroid."""
    h, w = coverage.shape
    reach = max(math.hypot(x - cx, y - cy) for x in (0, w) for y in (0, h)) + 1
    theta = np.arange(rays) * 2 * math.pi / rays
    steps = np.arange(0.0, reach, 0.5)
    xs = cx + np.cos(theta)[:, None] * steps[None]
    ys = cy + np.sin(theta)[:, None] * steps[None]
    return ndimage.map_coordinates(coverage, [ys, xs], order=1, mode="constant").sum(1) * 0.5


def harmonics(profile: np.ndarray) -> np.ndarray:
    """Complex Fourier coefficients 0..8 of r(theta), 1..8 normalised by the mean radius."""
    coeffs = np.fft.rfft(profile)[:9] / len(profile)
    return coeffs / max(abs(coeffs[0]), 1e-9)


def classify_shape(coeffs: np.ndarray) -> str:
    """Oval when the 2-fold harmonic is strong and the strongest; else circle when no 3-, 4- or 5-fold
    harmonic stands out, otherwise the strongest of them."""
    strength = {k: abs(coeffs[k]) for k in HARMONIC_SHAPES}
    if abs(coeffs[2]) >= OVAL_HARMONIC and abs(coeffs[2]) > max(strength.values()):
        return "oval"
    k = max(strength, key=strength.get)
    return "circle" if strength[k] < CIRCLE_HARMONIC else HARMONIC_SHAPES[k]


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def accumulated_rotation(phases: list[float | None], k: int) -> float:
    """Total turn in degrees from per-frame phases of harmonic ``k`` (unambiguous below 180/k per step)."""
    total, previous = 0.0, None
    for phase in phases:
        if phase is None:
            continue
        if previous is not None:
            total += -_wrap(phase - previous) / k
        previous = phase
    return math.degrees(total)


# ---------------------------------------------------------------------------------------------
# Motion


def _fit(values: np.ndarray, valid: np.ndarray) -> tuple[float, np.ndarray]:
    """(slope per frame, residuals at valid frames) of a straight-line least-squares fit."""
    t = np.flatnonzero(valid).astype(float)
    if len(t) < 2:
        return 0.0, np.zeros(len(t))
    slope, intercept = np.polyfit(t, values[valid], 1)
    return float(slope), values[valid] - (slope * t + intercept)


def direction_of(dx: float, dy: float) -> str:
    """The nearest of the 8 screen directions (y down)."""
    angle = math.degrees(math.atan2(-dy, dx)) % 360
    return SECTORS[int(((angle + 22.5) % 360) // 45)]


def _motion_label(track: ObjectTrack, side: float) -> str:
    if track.direction is not None:
        return track.direction
    if track.bounce_px >= BOUNCE_FRACTION * side:
        return "bouncing"
    if track.scale_ratio >= GROW_RATIO:
        return "growing"
    if track.scale_ratio <= 1 / GROW_RATIO:
        return "shrinking"
    if abs(track.rotation_deg) >= ROTATE_DEG:
        return "rotating"
    return "still"


# ---------------------------------------------------------------------------------------------
# Per-frame measurement and tracking


@dataclass
class _Measure:
    cx: float
    cy: float
    area: float
    coeffs: np.ndarray
    core_rgb: np.ndarray  # [N, 3] pixels the object covers (almost) fully


def _local_coverage(
    frame: np.ndarray, rows: np.ndarray, component: np.ndarray, k: int
) -> tuple[np.ndarray, int, int, int, int]:
    """Sub-pixel coverage of one component by colour ``k`` in the window around it (the component grown
    by two pixels, so its anti-aliased rim counts) and the window's bounds (y0, y1, x0, x1)."""
    ys, xs = np.nonzero(component)
    y0, y1 = max(ys.min() - 3, 0), min(ys.max() + 4, component.shape[0])
    x0, x1 = max(xs.min() - 3, 0), min(xs.max() + 4, component.shape[1])
    near = ndimage.binary_dilation(component[y0:y1, x0:x1], structure=_EIGHT, iterations=2)
    local = np.where(near, coverage(frame[y0:y1, x0:x1], rows[y0:y1], k), 0.0)
    return np.where(local >= 0.15, local, 0.0), y0, y1, x0, x1  # faint texture / noise off the object


def _measure(frame: np.ndarray, rows: np.ndarray, component: np.ndarray, k: int) -> _Measure:
    """Centroid, area, shape harmonics and core colour of one component, from its sub-pixel coverage."""
    local, y0, y1, x0, x1 = _local_coverage(frame, rows, component, k)
    window = frame[y0:y1, x0:x1]
    area = float(local.sum())
    cx = float(local.sum(0) @ np.arange(x0, x1) / area)
    cy = float(local.sum(1) @ np.arange(y0, y1) / area)
    coeffs = harmonics(radial_profile(local, cx - x0, cy - y0))
    core = local >= min(0.85, float(local.max()))
    return _Measure(cx, cy, area, coeffs, window[core].astype(np.float64))


def _build_track(
    frames: np.ndarray, rows: np.ndarray, k: int, per_frame: list[list[np.ndarray]]
) -> ObjectTrack:
    steps, height, width = frames.shape[:3]
    centroids = np.full((steps, 2), np.nan)
    areas = np.zeros(steps)
    votes: dict[str, float] = {}
    all_coeffs: list[np.ndarray | None] = [None] * steps
    core: list[np.ndarray] = []
    for t, comps in enumerate(per_frame):
        if not comps:
            continue
        m = _measure(frames[t], rows, comps[0], k)
        centroids[t], areas[t], all_coeffs[t] = (m.cx, m.cy), m.area, m.coeffs
        core.append(m.core_rgb)
        shape = classify_shape(m.coeffs)
        votes[shape] = votes.get(shape, 0.0) + m.area
    shape = max(votes, key=votes.get)
    total = sum(votes.values())
    valid = areas > 0
    side = float(min(height, width))
    sx, _ = _fit(centroids[:, 0], valid)
    sy, ry = _fit(centroids[:, 1], valid)
    sa, _ = _fit(np.log(np.maximum(areas, 1e-6)), valid)
    dx, dy = sx * (steps - 1), sy * (steps - 1)
    rotation = 0.0
    if shape != "circle":
        h = SHAPE_HARMONIC[shape]
        phases = [
            None if c is None or abs(c[h]) < CIRCLE_HARMONIC / 2 else float(np.angle(c[h]))
            for c in all_coeffs
        ]
        rotation = accumulated_rotation(phases, h)
    colour, delta_e = name_colour(np.median(np.concatenate(core), axis=0))
    track = ObjectTrack(
        colour=colour,
        shape=shape,
        centroids=centroids,
        areas=areas,
        colour_delta_e=delta_e,
        displacement=(dx, dy),
        direction=direction_of(dx, dy) if math.hypot(dx, dy) >= MOVE_FRACTION * side else None,
        scale_ratio=float(math.exp(sa * (steps - 1))),
        rotation_deg=rotation,
        bounce_px=float(ry.max() - ry.min()) if len(ry) else 0.0,
        motion="still",
        shape_votes={s: v / total for s, v in votes.items()},
    )
    track.motion = _motion_label(track, side)
    return track


def check_frames(frames: object, name: str = "frames") -> np.ndarray:
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.ndim != 4
        or frames.shape[-1] != 3
    ):
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"{name}: expected a uint8 array [T, H, W, 3], got {got}")
    if frames.shape[0] < 2 or min(frames.shape[1:3]) < 16:
        raise ValueError(f"{name}: need at least 2 frames of at least 16x16 pixels, got {frames.shape}")
    return frames


def analyse_clip(frames: np.ndarray) -> ClipAnalysis:
    """Background, objects (colour, shape, centroid and area tracks) and each object's motion."""
    frames = check_frames(frames)
    steps, height, width = frames.shape[:3]
    rows = estimate_background(frames)
    background, gradient, distance = name_background(rows)
    label = unmix(frames, rows)
    min_area = max(8.0, MIN_AREA * height * width)
    found = [drop_fringes(_components(label[t], min_area)) for t in range(steps)]
    objects, count = [], 0
    for k in sorted({c.colour for comps in found for c in comps}):
        per_frame = [[c.mask for c in comps if c.colour == k] for comps in found]
        present = sum(1 for masks in per_frame if masks)
        if present < max(1, math.ceil(MIN_PRESENCE * steps)):
            continue
        objects.append(_build_track(frames, rows, k, per_frame))
        areas = [[c.area for c in comps if c.colour == k] for comps in found]
        significant = [sum(1 for a in frame if a >= 0.2 * frame[0]) for frame in areas if frame]
        count += max(1, int(round(float(np.median(significant)))))
    return ClipAnalysis(height, width, steps, background, gradient, distance, objects, count)


@dataclass
class ObjectMatte:
    """One object of a still frame as a soft matte: what pixels it covers and with what colour."""

    colour: str  # palette name
    rgb: np.ndarray  # [3] median colour of the pixels it covers (almost) fully
    coverage: np.ndarray  # [H, W] float32 in 0..1, zero off the object


def object_mattes(frame: np.ndarray) -> tuple[np.ndarray, list[ObjectMatte]]:
    """The background rows ``[H, 3]`` of one frame ``[H, W, 3]`` (uint8) and, for every palette colour,
    its largest object as a matte (the sub-pixel coverage the analyser measures shapes from), largest
    first. Why: a first frame's objects can then be lifted off the background and moved as they look,
    anti-aliased rims included, instead of being redrawn from labels."""
    frames = check_frames(np.stack([frame, frame]))
    height, width = frames.shape[1:3]
    rows = estimate_background(frames)
    label = unmix(frames[:1], rows)[0]
    components = drop_fringes(_components(label, max(8.0, MIN_AREA * height * width)))
    mattes, seen = [], set()
    for component in components:  # largest first
        if component.colour in seen:
            continue
        seen.add(component.colour)
        local, y0, y1, x0, x1 = _local_coverage(frame, rows, component.mask, component.colour)
        full = np.zeros((height, width), np.float32)
        full[y0:y1, x0:x1] = local
        core = frame[y0:y1, x0:x1][local >= min(0.85, float(local.max()))].astype(np.float64)
        mattes.append(ObjectMatte(COLOUR_NAMES[component.colour], np.median(core, axis=0), full))
    return rows, mattes


def smoothness_px(
    frames: np.ndarray, keyframe_indices: list[int], analysis: ClipAnalysis | None = None
) -> float:
    """Mean distance (pixels) of in-between centroids from the straight path between their keyframes.

    Linear motion interpolated well scores ~0; jitter or popping between keyframes scores high. NaN when
    nothing can be measured (no object, or no in-between frame).
    """
    frames = check_frames(frames)
    keys = sorted(set(int(k) for k in keyframe_indices))
    if len(keys) < 2 or keys[0] < 0 or keys[-1] >= len(frames):
        span = f"[0, {len(frames) - 1}]"
        raise ValueError(
            f"keyframe_indices: need at least 2 distinct indices in {span}, got {keyframe_indices}"
        )
    analysis = analysis if analysis is not None else analyse_clip(frames)
    distances = []
    for track in analysis.objects:
        c = track.centroids
        for k0, k1 in zip(keys[:-1], keys[1:], strict=True):
            if np.isnan(c[k0]).any() or np.isnan(c[k1]).any():
                continue
            for i in range(k0 + 1, k1):
                if not np.isnan(c[i]).any():
                    expected = c[k0] + (c[k1] - c[k0]) * (i - k0) / (k1 - k0)
                    distances.append(float(np.linalg.norm(c[i] - expected)))
    return float(np.mean(distances)) if distances else math.nan
