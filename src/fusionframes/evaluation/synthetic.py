"""Scoring generated clips against prompts of the synthetic world, and the evaluator's own ground truth.

A prompt is parsed back into a spec (:func:`fusionframes.synthetic.parse_prompt`); a generated clip
is analysed with classic vision (:mod:`fusionframes.evaluation.analysis`); each metric says whether the
clip shows what the prompt asked. Prompts outside the grammar are listed as "unparsed", never guessed.
Held-out prompts (combinations never seen in training) are reported apart from training-grammar ones.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fusionframes.evaluation.analysis import (
    BOUNCE_FRACTION,
    GROW_RATIO,
    MOVE_FRACTION,
    ROTATE_DEG,
    ClipAnalysis,
    ObjectTrack,
    analyse_clip,
    check_frames,
    direction_of,
    smoothness_px,
)
from fusionframes.io.atomic import atomic_write
from fusionframes.synthetic import (
    BACKGROUNDS,
    DIRECTIONS,
    HELD_OUT,
    PAN_SHIFT,
    TRAVEL,
    ObjectSpec,
    Scene,
    allowed_background,
    caption,
    decode_mp4,
    encode_mp4,
    parse_prompt,
    render_clip,
    sample_scene,
    scene_spec,
)

METRICS: tuple[str, ...] = ("colour", "shape", "motion", "background", "count")
Generate = Callable[[str, int], tuple[np.ndarray, list[int]]]
_PROMPT_STREAM = 0x5EED  # default prompts come from their own RNG stream, apart from any training clip
_CHECK_STREAM = 0x6C7  # so do the ground-truth check's clips


# ---------------------------------------------------------------------------------------------
# Scoring one clip


def _expected_shift(obj: dict, pan: str | None) -> tuple[float, float]:
    """Screen displacement (fractions of the frame) the prompt implies: own travel plus camera pan."""
    dx, dy = 0.0, 0.0
    if obj["motion"] in DIRECTIONS:
        ux, uy = DIRECTIONS[obj["motion"]]
        travel = TRAVEL[obj.get("speed") or "slowly"]
        dx, dy = ux * travel, uy * travel
    if pan is not None:
        dx += PAN_SHIFT if pan == "left" else -PAN_SHIFT
    return dx, dy


def motion_matches(obj: dict, track: ObjectTrack, pan: str | None, side: float) -> bool | None:
    """Whether ``track`` moves as ``obj`` says, allowing for a camera pan; None when not measurable."""
    if obj["motion"] == "rotating" and obj["shape"] == "circle":
        return None  # a turning circle looks the same
    dx, dy = _expected_shift(obj, pan)
    expected = direction_of(dx, dy) if math.hypot(dx, dy) >= MOVE_FRACTION else None
    if track.direction != expected:
        return False
    bounce = track.bounce_px >= BOUNCE_FRACTION * side
    grows, shrinks = track.scale_ratio >= GROW_RATIO, track.scale_ratio <= 1 / GROW_RATIO
    turns = abs(track.rotation_deg) >= ROTATE_DEG
    checks = {
        "bouncing": bounce,
        "growing": grows and not bounce,
        "shrinking": shrinks and not bounce,
        "rotating": turns and not (bounce or grows or shrinks),
        "still": not (bounce or grows or shrinks or turns),
    }
    return checks.get(obj["motion"], not bounce)


def match_objects(spec: dict, analysis: ClipAnalysis) -> list[ObjectTrack | None]:
    """Pair each prompt object with a distinct detected object, best colour then shape agreement first."""
    wanted = spec["objects"]
    pool: list[ObjectTrack | None] = [*analysis.objects, *([None] * len(wanted))]
    best, best_key = [None] * len(wanted), (-1, -1, 0.0)
    for choice in itertools.permutations(range(len(pool)), len(wanted)):
        tracks = [pool[i] for i in choice]
        colours = sum(1 for o, t in zip(wanted, tracks, strict=True) if t and t.colour == o["colour"])
        shapes = sum(1 for o, t in zip(wanted, tracks, strict=True) if t and t.shape == o["shape"])
        area = sum(float(np.nanmax(t.areas)) for t in tracks if t)
        key = (colours, shapes, area)
        if key > best_key:
            best, best_key = tracks, key
    return best


def _all(values: list[bool | None]) -> bool | None:
    known = [v for v in values if v is not None]
    return all(known) if known else None


def score_clip(spec: dict | Scene, analysis: ClipAnalysis) -> dict[str, bool | None]:
    """``{colour, shape, motion, background, count}``: True/False, or None where the prompt says nothing."""
    if isinstance(spec, Scene):
        spec = scene_spec(spec)
    if not isinstance(spec, dict) or "objects" not in spec:
        raise ValueError("spec: expected a parse_prompt() dict or a Scene")
    side = float(min(analysis.height, analysis.width))
    tracks = match_objects(spec, analysis)
    pairs = list(zip(spec["objects"], tracks, strict=True))
    return {
        "colour": _all([t is not None and t.colour == o["colour"] for o, t in pairs]),
        "shape": _all([t is not None and t.shape == o["shape"] for o, t in pairs]),
        "motion": _all(
            [t is not None and motion_matches(o, t, spec.get("camera_pan"), side) for o, t in pairs]
        ),
        "background": None if spec.get("background") is None else analysis.background == spec["background"],
        "count": analysis.count == spec["count"],
    }


# ---------------------------------------------------------------------------------------------
# Prompts


def default_prompts(n: int, seed: int = 0, holdout: bool = False) -> list[str]:
    """``n`` deterministic evaluation prompts.

    Training-grammar prompts are drawn from their own RNG stream (fresh scenes and phrasings, not any
    training clip's caption); held-out prompts cycle through ``HELD_OUT`` with varied speed, background
    and phrasing. Neither ever carries a held-out triple into the other group.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n: must be an int >= 0, got {n!r}")
    prompts = []
    for i in range(n):
        rng = np.random.default_rng([seed, _PROMPT_STREAM, int(holdout), i])
        if not holdout:
            scene = sample_scene(rng)
        else:
            colour, shape, motion = HELD_OUT[i % len(HELD_OUT)]
            choices = [b for b in BACKGROUNDS if allowed_background(colour, b)]
            background = choices[0] if i < len(HELD_OUT) else str(rng.choice(choices))
            obj = ObjectSpec(colour, shape, motion, speed=str(rng.choice(("slowly", "quickly"))))
            scene = Scene([obj], background)
        prompts.append(caption(scene, rng))
    return prompts


def is_held_out_spec(spec: dict) -> bool:
    return any((o["colour"], o["shape"], o["motion"]) in HELD_OUT for o in spec["objects"])


# ---------------------------------------------------------------------------------------------
# Evaluation of a generator


def _percent(rows: list[dict], metric: str) -> float | None:
    values = [r["scores"][metric] for r in rows if r["scores"].get(metric) is not None]
    return round(100.0 * sum(values) / len(values), 2) if values else None


def _summary(rows: list[dict]) -> dict:
    scored = [r for r in rows if "scores" in r]
    smooth = [r["smoothness_px"] for r in scored if r["smoothness_px"] is not None]
    return {
        "prompts": len(scored),
        "accuracy": {m: _percent(scored, m) for m in (*METRICS, "all")},
        "smoothness_px": round(float(np.mean(smooth)), 3) if smooth else None,
    }


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 3)


def score_frames(spec: dict, frames: np.ndarray, keyframes: list[int] | None = None) -> dict:
    """One JSON-able row: scores, smoothness (when keyframes are given) and what was seen."""
    analysis = analyse_clip(frames)
    scores = score_clip(spec, analysis)
    scores["all"] = _all(list(scores.values()))
    smooth = smoothness_px(frames, keyframes, analysis) if keyframes and len(set(keyframes)) > 1 else math.nan
    return {"scores": scores, "smoothness_px": _finite(smooth), "analysis": analysis.to_dict()}


def _generated(result: object, prompt: str) -> tuple[np.ndarray, list[int]]:
    if not isinstance(result, tuple) or len(result) != 2:
        raise ValueError(f"generate: must return (frames, keyframe_indices) for {prompt!r}")
    frames, keyframes = result
    return check_frames(frames, "generate frames"), [int(k) for k in keyframes]


def evaluate(
    generate: Generate,
    prompts: Sequence[str] | None = None,
    num: int | None = None,
    seed: int = 0,
    sheet_path: str | Path | None = None,
) -> dict:
    """Generate each prompt (``generate(prompt, seed + i)``), analyse and score it; JSON-able summary.

    With ``prompts`` None the default set is used: ``num`` (default 32) training-grammar prompts plus one
    per held-out triple. Otherwise the first ``num`` of ``prompts`` (all when None). Prompts outside the
    grammar are listed under "unparsed" and not generated. ``sheet_path`` writes a keyframe contact sheet.
    """
    if num is not None and (not isinstance(num, int) or isinstance(num, bool) or num < 0):
        raise ValueError(f"num: must be None or an int >= 0, got {num!r}")
    if prompts is None:
        prompts = default_prompts(32 if num is None else num, seed) + default_prompts(
            len(HELD_OUT), seed, True
        )
    else:
        prompts = list(prompts)[:num] if num is not None else list(prompts)
    rows, sheet_rows, sheet_labels = [], [], []
    for i, prompt in enumerate(prompts):
        spec = parse_prompt(prompt)
        if spec is None:
            rows.append({"prompt": prompt, "split": "unparsed"})
            continue
        frames, keyframes = _generated(generate(prompt, seed + i), prompt)
        row = {
            "prompt": prompt,
            "seed": seed + i,
            "split": "held_out" if is_held_out_spec(spec) else "training",
        }
        row.update(score_frames(spec, frames, keyframes))
        rows.append(row)
        if sheet_path is not None:
            sheet_rows.append(frames[sorted(set(keyframes))] if keyframes else frames)
            failed = [m for m in METRICS if row["scores"][m] is False]
            sheet_labels.append(f"{prompt}  [{'ok' if not failed else 'x ' + ', '.join(failed)}]")
    result = {
        "seed": seed,
        "overall": _summary(rows),
        "training": _summary([r for r in rows if r["split"] == "training"]),
        "held_out": _summary([r for r in rows if r["split"] == "held_out"]),
        "unparsed": [r["prompt"] for r in rows if r["split"] == "unparsed"],
        "rows": rows,
    }
    if sheet_path is not None and sheet_rows:
        result["contact_sheet"] = str(contact_sheet(sheet_rows, sheet_labels, sheet_path))
    return result


# ---------------------------------------------------------------------------------------------
# Contact sheet


def contact_sheet(
    rows_of_frames: Sequence[np.ndarray], labels: Sequence[str], path: str | Path, columns: int = 8
) -> Path:
    """A PNG grid: one row of (at most ``columns``) frames per clip, its caption above it."""
    if not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns: must be an int >= 1, got {columns!r}")
    if len(rows_of_frames) != len(labels) or not rows_of_frames:
        raise ValueError(
            f"labels: need one label per row of frames ({len(rows_of_frames)} rows, {len(labels)} labels)"
        )
    rows = [np.asarray(r) for r in rows_of_frames]
    for r in rows:
        if r.dtype != np.uint8 or r.ndim != 4 or r.shape[-1] != 3 or not len(r):
            raise ValueError(f"rows_of_frames: each row must be uint8 [K, H, W, 3], got {r.dtype} {r.shape}")
    tile_h, tile_w = rows[0].shape[1:3]
    columns = min(columns, max(len(r) for r in rows))
    font = ImageFont.load_default()
    chars = max(20, columns * tile_w // 7)
    wrapped = [textwrap.wrap(str(label), chars) or [""] for label in labels]
    line_h, pad = 12, 4
    width = columns * tile_w + (columns + 1) * pad
    heights = [len(w) * line_h + pad + tile_h + pad for w in wrapped]
    sheet = Image.new("RGB", (width, sum(heights) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = pad
    for frames, lines in zip(rows, wrapped, strict=True):
        for j, line in enumerate(lines):
            draw.text((pad, y + j * line_h), line, fill=(0, 0, 0), font=font)
        y += len(lines) * line_h + pad // 2
        step = max(1, math.ceil(len(frames) / columns))
        for c, frame in enumerate(frames[::step][:columns]):
            tile = Image.fromarray(np.ascontiguousarray(frame)).resize((tile_w, tile_h), Image.BILINEAR)
            sheet.paste(tile, (pad + c * (tile_w + pad), y))
        y += tile_h + pad + pad // 2
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: sheet.save(tmp, format="PNG"))
    return out


# ---------------------------------------------------------------------------------------------
# The evaluator's own ground truth


def ground_truth_check(
    n: int = 64,
    seed: int = 0,
    size: int = 128,
    frames: int = 16,
    extra_variants: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> dict:
    """Score rendered clips (held-out triples included) against their parsed captions, raw and after MP4.

    Both should be ~100%: any shortfall is the evaluator's own error. Smoothness uses every 3rd frame as a
    keyframe; it is ~0 for linear motion and positive for bouncing/growing (not straight or not uniform).
    ``extra_variants`` maps more names to clip transforms (uint8 ``[T, H, W, 3]`` in and out), e.g. a
    MoVQ round trip, whose scores bound what a model with that decoder can reach.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: must be an int >= 1, got {n!r}")
    keyframes = sorted({*range(0, frames, 3), frames - 1})
    variants = {"raw": lambda clip: clip, "mp4": lambda clip: decode_mp4(encode_mp4(clip))}
    variants.update(extra_variants or {})
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    failures = []
    for i in range(n):
        rng = np.random.default_rng([seed, _CHECK_STREAM, i])
        scene = sample_scene(rng, holdout_ok=True)
        text = caption(scene, rng)
        spec = parse_prompt(text)
        if spec is None:
            raise RuntimeError(f"caption outside the grammar: {text!r}")
        clip = render_clip(scene, size, frames)
        for variant, transform in variants.items():
            row = score_frames(spec, transform(clip), keyframes)
            row["linear"] = all(o.motion in DIRECTIONS or o.motion == "still" for o in scene.objects)
            rows[variant].append(row)
            bad = [m for m in METRICS if row["scores"][m] is False]
            if bad:
                failures.append({"index": i, "variant": variant, "caption": text, "failed": bad})
    out: dict = {"clips": n, "seed": seed, "size": size, "frames": frames, "keyframes": keyframes}
    for variant, variant_rows in rows.items():
        summary = _summary(variant_rows)
        linear = [r["smoothness_px"] for r in variant_rows if r["linear"] and r["smoothness_px"] is not None]
        summary["smoothness_px_linear"] = round(float(np.mean(linear)), 3) if linear else None
        out[variant] = summary
    out["failures"] = failures
    return out
