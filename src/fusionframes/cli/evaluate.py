"""``fusionframes eval synthetic``: generate a video per prompt and score it with classic vision;
``fusionframes eval directions``: whether the keyframe model reads the direction words (no sampling).

Options, the prompts file and the output folders are checked before the model is loaded; the JSON
summary and the contact sheet are written atomically once every prompt is done.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fusionframes.cli import options
from fusionframes.io.atomic import atomic_write

METRIC_ORDER = ("colour", "shape", "motion", "background", "count", "all")


def configure_eval(p: argparse.ArgumentParser) -> None:
    eval_sub = p.add_subparsers(dest="eval_command", required=True)
    s = eval_sub.add_parser(
        "synthetic",
        help="score videos of the synthetic shapes world (colour, shape, motion, background, count)",
        description="Generate a video per prompt and score it with colour segmentation and centroid tracks.",
    )
    s.add_argument("--prompts-file", default=None, help="one prompt per line (default: the built-in set)")
    s.add_argument(
        "--num",
        type=options.bounded_int(0),
        default=None,
        help="prompts to use (default set: N training + the held-out list)",
    )
    s.add_argument(
        "--seed", type=options.SEED, default=0, help="seed of the first prompt (then +1 per prompt)"
    )
    s.add_argument("--fps", default="medium", help="low | medium | high (default medium)")
    options.add_keyframe_options(s)
    options.add_interpolation_options(s, guidance=False)
    options.add_model_options(s)
    options.add_lora_option(s)
    s.add_argument("--json", default=None, help="write the summary and per-prompt rows here")
    s.add_argument("--sheet", default=None, help="write a contact sheet of keyframes here (.png)")
    s.set_defaults(handler=run_eval_synthetic)
    d = eval_sub.add_parser(
        "directions",
        help="does the keyframe model read the direction words? (paired denoising losses, ~1 min on a CPU)",
        description="Noise rendered synthetic clips once and denoise them under their caption and under the "
        "reversed caption (left <-> right, rising <-> falling, ...). A model that reads the words denoises "
        "better under the true one: prefers_true well above 50%%.",
    )
    d.add_argument("--clips", type=options.bounded_int(1), default=48, help="rendered clips (default 48)")
    d.add_argument(
        "--timesteps",
        default="600,750,900",
        help="comma-separated noise levels out of 1000 (default 600,750,900)",
    )
    d.add_argument("--seed", type=int, default=0)
    options.add_model_options(d, device=False, dtype_default="float32")
    d.add_argument("--json", default=None, help="write the report here")
    d.set_defaults(handler=run_eval_directions)


def read_prompts(path: str | None) -> list[str] | None:
    """Non-empty, non-comment lines of ``path`` (None: use the evaluator's default set)."""
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"prompts-file: not found: {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"prompts-file: {file} is not a text file (not UTF-8); give one prompt per line"
        ) from None
    if "\x00" in text:
        raise ValueError(f"prompts-file: {file} is not a text file (it holds NUL bytes)")
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"prompts-file: {file} holds no prompts")
    return prompts


def _check_output(name: str, path: str | None, suffixes: tuple[str, ...]) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ValueError(f"{name}: must end in {' or '.join(suffixes)}, got {out.name!r}")
    if not out.parent.resolve().is_dir():
        raise FileNotFoundError(f"{name}: folder does not exist: {out.parent}")
    if out.is_dir():
        raise IsADirectoryError(f"{name}: {out} is a folder; give a file name ending in {suffixes[0]}")
    options.check_writable_folder(name, out.parent)
    return out


def format_summary(result: dict) -> str:
    """A small table: one row per split, percentages per metric, mean smoothness."""
    lines = [f"{'split':<10}{'n':>4}  " + "".join(f"{m:>11}" for m in METRIC_ORDER) + f"{'smooth px':>11}"]
    for split in ("training", "held_out", "overall"):
        summary = result[split]
        if not summary.get("prompts"):
            continue
        cells = []
        for metric in METRIC_ORDER:
            value = summary["accuracy"].get(metric)
            cells.append(f"{'-' if value is None else f'{value:.1f}%':>11}")
        smooth = summary.get("smoothness_px")
        lines.append(
            f"{split:<10}{summary['prompts']:>4}  "
            + "".join(cells)
            + f"{'-' if smooth is None else f'{smooth:.2f}':>11}"
        )
    if result["unparsed"]:
        lines.append(f"outside the grammar (not generated): {len(result['unparsed'])}")
    return "\n".join(lines)


def run_eval_synthetic(args: argparse.Namespace) -> int:
    from fusionframes.io.checkpoints import model_config_for
    from fusionframes.pipelines.text_to_video import validate_settings
    from fusionframes.runtime import resolve_device, resolve_dtype

    prompts = read_prompts(args.prompts_file)
    json_path = _check_output("json", args.json, (".json",))
    sheet_path = _check_output("sheet", args.sheet, (".png",))
    device = resolve_device(args.device)
    resolve_dtype(args.dtype, device)
    config = model_config_for(args.model)
    settings = validate_settings(
        config,
        "a prompt",
        fps=args.fps,
        num_inference_steps=args.steps,
        interpolation_steps=args.interpolation_steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        scheduler=args.scheduler,
        layout_prior_strength=args.layout_strength,
    )

    import dataclasses

    import torch
    from tqdm.auto import tqdm

    from fusionframes.evaluation.synthetic import evaluate
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(args.model, device=device, dtype=args.dtype)
    options.apply_loras(pipe, args)
    bar = tqdm(desc="eval synthetic", unit="video")

    def generate(prompt: str, seed: int):
        run = dataclasses.replace(settings, prompt=prompt, seed=seed)
        video = pipe.generate(run, torch.Generator("cpu").manual_seed(seed), output_type="np", progress=False)
        bar.update()
        return video.frames, video.keyframe_indices

    result = evaluate(generate, prompts, args.num, args.seed, sheet_path)
    bar.close()
    result["settings"] = {
        "model": args.model or "builtin",
        "fps": settings.fps,
        "steps": settings.num_inference_steps,
        "interpolation_steps": settings.interpolation_steps,
        "scheduler": settings.scheduler,
        "guidance": settings.guidance_scale,
        **({"layout_prior_strength": settings.layout_prior_strength} if config.layout_prior else {}),
    }
    print(format_summary(result))
    if json_path is not None:
        atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
        print(f"wrote {json_path}")
    if "contact_sheet" in result:
        print(f"wrote {result['contact_sheet']}")
    return 0


def parse_timesteps(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"timesteps: expected comma-separated integers in [0, 1000), got {text!r}") from None
    if not values or any(not 0 <= v < 1000 for v in values):
        raise ValueError(f"timesteps: each must be in [0, 1000), got {text!r}")
    return values


def run_eval_directions(args: argparse.Namespace) -> int:
    from fusionframes.io.checkpoints import model_config_for

    timesteps = parse_timesteps(args.timesteps)
    json_path = _check_output("json", args.json, (".json",))
    if model_config_for(args.model).keyframe_unet.num_frames is None:
        raise ValueError("model: the direction probe needs a video (keyframe) model")

    from fusionframes.evaluation.direction_probe import direction_probe
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(args.model, dtype=args.dtype)
    report = direction_probe(pipe, args.clips, timesteps, args.seed)
    report["model"] = args.model or "builtin"
    print(f"{'timestep':>8} {'loss (true)':>12} {'loss (reversed)':>16} {'gap':>8} {'prefers true':>13}")
    for t, row in report["timesteps"].items():
        print(
            f"{t:>8} {row['loss_true']:>12.6f} {row['loss_reversed']:>16.6f} "
            f"{row['gap_percent']:>+7.2f}% {row['prefers_true']:>12.1f}%"
        )
    if json_path is not None:
        atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
        print(f"wrote {json_path}")
    return 0
