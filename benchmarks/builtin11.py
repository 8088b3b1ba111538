"""Measure the built-in model's Kandinsky Video 1.1 parts (docs/training.md, "Kandinsky Video 1.1 parts").

    python benchmarks/builtin11.py decoder --model DIR [--clips 24]      # temporal vs image decoder
    python benchmarks/builtin11.py t2v --model DIR [--num 12]            # generated videos decoded both ways
    python benchmarks/builtin11.py i2v --model DIR [--num 24]            # image-to-video vs text-only
    python benchmarks/builtin11.py roundtrip --model DIR [--num 24]      # the image MoVQ's ceiling

``decoder``: held-out synthetic clips (scenes drawn from their own seed stream, never a training clip)
are encoded by the image MoVQ and the same latents decoded by both decoders: PSNR and SSIM per frame,
background flicker (mean absolute frame-to-frame change, 0-255, of the pixels that are background in
both ground-truth frames; the ground truth's own is 0 there unless the camera pans, and such clips are
left out of it) and the evaluator's smoothness. ``t2v``: the text-to-video path's latents (the
evaluator's default prompts) decoded both ways, each scored by the evaluator. ``i2v``: the first frame of
a held-out synthetic clip and its caption, generated with the image and, on the same prompt and seed,
text only: first decoded frame PSNR against the image, colour and shape kept, motion direction.
``roundtrip``: the i2v benchmark's held-out clips themselves, encoded and decoded by the image MoVQ and
scored like the generated ones: what any latent model with this decoder can at best reach.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fusionframes.evaluation.synthetic import default_prompts, evaluate, score_frames  # noqa: E402
from fusionframes.synthetic import caption, render_clip, sample_scene, scene_spec  # noqa: E402
from fusionframes.synthetic.render import _background_image  # noqa: E402

HELD_OUT_STREAM = 251125  # the scene seed stream of these measurements (training shards use others)


def held_out_scene(seed: int, i: int):
    """The i-th held-out scene and caption (no camera pans for the decoder's flicker figure)."""
    rng = np.random.default_rng([HELD_OUT_STREAM, seed, i])
    scene = sample_scene(rng)
    return scene, caption(scene, rng)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (or stacks)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two uint8 RGB images (7x7 uniform windows, per channel; Wang et al. 2004 constants)."""
    x = torch.from_numpy(a).permute(2, 0, 1)[None].double()
    y = torch.from_numpy(b).permute(2, 0, 1)[None].double()
    pool = torch.nn.functional.avg_pool2d
    mx, my = pool(x, 7, 1), pool(y, 7, 1)
    vx, vy = pool(x * x, 7, 1) - mx**2, pool(y * y, 7, 1) - my**2
    cov = pool(x * y, 7, 1) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    score = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(score.mean())


def background_flicker(frames: np.ndarray, truth: np.ndarray, background: np.ndarray) -> float:
    """Mean |frame t+1 - frame t| (0-255) over pixels that are background in both truth frames."""
    still = np.all(truth == background[None], axis=-1)  # [T, H, W]
    both = still[1:] & still[:-1]
    change = np.abs(np.diff(frames.astype(np.float64), axis=0)).mean(-1)
    return float(change[both].mean())


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """``[T, 3, H, W]`` in [0, 1] -> ``[T, H, W, 3]`` uint8 (rounded)."""
    return (video.clamp(0, 1) * 255.0).round().byte().permute(0, 2, 3, 1).numpy()


def encode_truth(movq, truth: np.ndarray) -> torch.Tensor:
    """Latents of a rendered clip ``[T, H, W, 3]`` (uint8) by the image MoVQ."""
    pixels = torch.from_numpy(truth).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        return movq.encode(pixels)


def load(model: str):
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    return TextToVideoPipeline.from_pretrained(model, device="cpu", dtype="float32")


def run_decoder(args: argparse.Namespace) -> dict:
    from fusionframes.pipelines.builtin11 import decode_frames

    pipe = load(args.model)
    movq = pipe.components.movq
    rows = {"image": [], "video": []}
    flicker = {"image": [], "video": [], "truth": []}
    started = time.perf_counter()
    for i in range(args.clips):
        scene, _ = held_out_scene(args.seed, i)
        truth = render_clip(scene, 128, args.frames)
        latents = encode_truth(movq, truth)
        keyframes = list(range(0, args.frames, 4))
        for decoder in rows:
            frames = to_uint8(decode_frames(pipe.components, latents, decoder, 4, False))
            scored = score_frames(scene_spec(scene), frames, keyframes)
            rows[decoder].append(
                {
                    "psnr": float(np.mean([psnr(f, t) for f, t in zip(frames, truth, strict=True)])),
                    "ssim": float(np.mean([ssim(f, t) for f, t in zip(frames, truth, strict=True)])),
                    "smoothness_px": scored["smoothness_px"],
                }
            )
            if not scene.camera_pan:
                background = _background_image(scene, 128, 0.0)
                flicker[decoder].append(background_flicker(frames, truth, background))
        if not scene.camera_pan:
            flicker["truth"].append(background_flicker(truth, truth, _background_image(scene, 128, 0.0)))

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return round(float(np.mean(values)), 4) if values else None

    return {
        "clips": args.clips,
        "frames": args.frames,
        "clips_without_pan": len(flicker["truth"]),
        **{
            decoder: {
                "psnr_db": mean([r["psnr"] for r in rows[decoder]]),
                "ssim": mean([r["ssim"] for r in rows[decoder]]),
                "background_flicker": mean(flicker[decoder]),
                "smoothness_px": mean([r["smoothness_px"] for r in rows[decoder]]),
            }
            for decoder in rows
        },
        "truth_background_flicker": mean(flicker["truth"]),
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_t2v(args: argparse.Namespace) -> dict:
    """The text-to-video latents, decoded both ways (one generation per prompt)."""
    import fusionframes.pipelines.text_to_video as t2v
    from fusionframes.pipelines.builtin11 import decode_frames

    pipe = load(args.model)
    captured: list[torch.Tensor] = []

    def keep(components, latents, decoder, chunk, progress):  # record the latents, decode as asked
        captured.append(latents.clone())
        return decode_frames(components, latents, decoder, chunk, progress)

    t2v.decode_frames = keep
    prompts = default_prompts(args.num, 0)
    videos: dict[str, list] = {"image": [], "video": []}

    def generate(prompt: str, seed: int):
        settings = t2v.validate_settings(pipe.config, prompt, seed=seed, decoder="image")
        out = pipe.generate(settings, torch.Generator().manual_seed(seed), output_type="np", progress=False)
        videos["image"].append((out.frames, out.keyframe_indices))
        frames = to_uint8(decode_frames(pipe.components, captured[-1], "video", 4, False))
        videos["video"].append((frames, out.keyframe_indices))
        return out.frames, out.keyframe_indices

    started = time.perf_counter()
    image = evaluate(generate, prompts)
    replay = iter(videos["video"])
    video = evaluate(lambda prompt, seed: next(replay), prompts)
    return {
        "prompts": len(prompts),
        "image": image["overall"],
        "video": video["overall"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_i2v(args: argparse.Namespace) -> dict:
    from fusionframes.pipelines.text_to_video import validate_settings

    pipe = load(args.model)
    rows = []
    started = time.perf_counter()
    for i in range(args.num):
        scene, prompt = held_out_scene(args.seed + 1, i)
        first = Image.fromarray(render_clip(scene, 128, 29)[0])
        spec = scene_spec(scene)
        row: dict = {"prompt": prompt}
        for mode in ("text", "image"):
            settings = validate_settings(
                pipe.config,
                prompt,
                seed=i,
                image=first if mode == "image" else None,
                num_inference_steps=args.steps,
                image_strength=args.strength if mode == "image" else 1.0,
                image_start=args.start,
                layout_prior_strength=args.layout_strength if mode == "image" else None,
            )
            out = pipe.generate(
                settings,
                torch.Generator().manual_seed(i),
                output_type="np",
                progress=False,
                image=first if mode == "image" else None,
            )
            scored = score_frames(spec, out.frames, out.keyframe_indices)["scores"]
            row[mode] = {
                "first_frame_psnr": round(psnr(out.frames[0], np.asarray(first)), 2),
                "colour_shape": bool(scored["colour"] and scored["shape"]),
                "motion": scored["motion"],
            }
        rows.append(row)

    def summary(mode: str) -> dict:
        kept = [r[mode]["colour_shape"] for r in rows]
        motion = [r[mode]["motion"] for r in rows if r[mode]["motion"] is not None]
        return {
            "first_frame_psnr_db_mean": round(float(np.mean([r[mode]["first_frame_psnr"] for r in rows])), 2),
            "first_frame_psnr_db_min": round(float(np.min([r[mode]["first_frame_psnr"] for r in rows])), 2),
            "colour_shape_kept_pct": round(100.0 * sum(kept) / len(kept), 1),
            "motion_right_pct": round(100.0 * sum(motion) / len(motion), 1) if motion else None,
        }

    return {
        "clips": len(rows),
        "steps": args.steps,
        "image_strength": args.strength,
        "image_start": args.start,
        "layout_strength": args.layout_strength,
        "image": summary("image"),
        "text": summary("text"),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows if args.rows else None,
    }


def run_roundtrip(args: argparse.Namespace) -> dict:
    """The i2v clips' ground truth through the image MoVQ (encode, decode), scored by the evaluator."""
    from fusionframes.pipelines.builtin11 import decode_frames

    pipe = load(args.model)
    rows = []
    started = time.perf_counter()
    for i in range(args.num):
        scene, prompt = held_out_scene(args.seed + 1, i)
        latents = encode_truth(pipe.components.movq, render_clip(scene, 128, 29))
        frames = to_uint8(decode_frames(pipe.components, latents, "image", 4, False))
        scored = score_frames(scene_spec(scene), frames, list(range(0, 29, 4)))["scores"]
        rows.append({"prompt": prompt, "colour_shape": bool(scored["colour"] and scored["shape"])})
    return {
        "clips": len(rows),
        "colour_shape_kept_pct": round(100.0 * sum(r["colour_shape"] for r in rows) / len(rows), 1),
        "lost": [r["prompt"] for r in rows if not r["colour_shape"]],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("decoder", "t2v", "i2v", "roundtrip"):
        p = sub.add_parser(name)
        p.add_argument("--model", default="builtin")
        p.add_argument("--seed", type=int, default=0)
    sub.choices["decoder"].add_argument("--clips", type=int, default=24)
    sub.choices["decoder"].add_argument("--frames", type=int, default=29)
    sub.choices["t2v"].add_argument("--num", type=int, default=12)
    sub.choices["i2v"].add_argument("--num", type=int, default=24)
    sub.choices["roundtrip"].add_argument("--num", type=int, default=24)
    sub.choices["i2v"].add_argument("--steps", type=int, default=None)
    sub.choices["i2v"].add_argument("--strength", type=float, default=1.0, help="image_strength")
    sub.choices["i2v"].add_argument(
        "--layout-strength", type=float, default=None, help="layout_prior_strength of the image runs"
    )
    sub.choices["i2v"].add_argument(
        "--start",
        choices=("objects", "moved", "layout", "image"),
        default="moved",
        help="image_start (see pipelines.builtin11; default: the pipeline's, moved)",
    )
    sub.choices["i2v"].add_argument("--rows", action="store_true", help="include every clip's row")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = {"decoder": run_decoder, "t2v": run_t2v, "i2v": run_i2v, "roundtrip": run_roundtrip}
    result = runs[args.what](args)
    result["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
