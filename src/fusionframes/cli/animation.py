"""``fusionframes animate`` (animation mode) and ``fusionframes movie`` (mini-movies).

Every option is checked, and the image and depth files read, before any model is loaded. Building these
parsers imports the camera presets and the animation defaults (so their help can list them).
"""

from __future__ import annotations

import argparse
from typing import Any

from fusionframes.cli import options

SCHEDULE_FLAGS = {  # CLI flag -> custom_motion parameter
    "zoom": "zoom",
    "angle": "angle",
    "translation_x": "translation_x",
    "translation_y": "translation_y",
    "translation_z": "translation_z",
    "rotation_x": "rotation_3d_x",
    "rotation_y": "rotation_3d_y",
    "rotation_z": "rotation_3d_z",
}
SCHEDULE_HELP = {
    "zoom": "scale per frame, e.g. '0:(1.02)' (> 1 zooms in)",
    "angle": "degrees per frame, counter-clockwise on screen",
    "translation_x": "pixels per frame; > 0 moves the content right",
    "translation_y": "pixels per frame; > 0 moves the content down",
    "translation_z": "depth units per frame; > 0 moves the camera forward",
    "rotation_x": "degrees per frame; > 0 tilts the camera up",
    "rotation_y": "degrees per frame; > 0 turns the camera left",
    "rotation_z": "degrees per frame; > 0 rolls the camera clockwise",
}


def _float_or_schedule(text: str) -> float | str:
    """``--strength 0.5`` is a constant; anything else is a keyframe schedule (checked later)."""
    try:
        return float(text)
    except ValueError:
        return text


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--steps",
        type=options.STEPS,
        default=None,
        help=f"denoising schedule, 1..{options.MAX_STEPS} (default: see docs/animation.md)",
    )
    p.add_argument(
        "--guidance",
        type=options.finite_float(0.0),
        default=None,
        help="classifier-free guidance weight (>= 0)",
    )
    options.add_prompt_options(p)
    options.add_size_options(p)
    options.add_model_options(p)
    options.add_lora_option(p)


def _add_animation_options(p: argparse.ArgumentParser, fps_help: str) -> None:
    from fusionframes.camera import PRESET_NAMES
    from fusionframes.pipelines import animation as a

    p.add_argument("--image", default=None, help="init picture (default: the first frame is made from text)")
    p.add_argument(
        "--motion",
        default=None,
        help=f"camera preset, 'a+b' combination, or 'custom' (default {a.DEFAULT_MOTION}); presets: "
        + ", ".join(PRESET_NAMES),
    )
    for flag in SCHEDULE_FLAGS:
        p.add_argument(
            "--" + flag.replace("_", "-"),
            default=None,
            metavar="SCHED",
            help=f"custom: {SCHEDULE_HELP[flag]}",
        )
    p.add_argument("--interpolation", default="linear", help="custom schedules: linear | smooth")
    p.add_argument("--fps", default=None, help=fps_help)
    p.add_argument(
        "--strength",
        type=_float_or_schedule,
        default=a.DEFAULT_STRENGTH,
        help=f"redraw strength 0..1 or a schedule like '0:(0.6), 48:(0.4)' (default {a.DEFAULT_STRENGTH})",
    )
    p.add_argument(
        "--cadence",
        type=int,
        default=a.DEFAULT_CADENCE,
        help=f"redraw every K-th frame (default {a.DEFAULT_CADENCE})",
    )
    p.add_argument("--border", default=a.DEFAULT_BORDER, help="reflect | replicate | wrap | zeros")
    p.add_argument("--colour-coherence", default=a.DEFAULT_COLOUR, help="lab | hsv | rgb | none")
    p.add_argument("--noise", type=float, default=a.DEFAULT_NOISE, help="grain added before each redraw")
    p.add_argument("--depth", default=None, help="grayscale depth picture (white = near) for 3D moves")
    p.add_argument("--fov", type=float, default=40.0, help="horizontal field of view in degrees for 3D moves")


def motion_from_args(args: argparse.Namespace) -> Any:
    """``--motion`` plus the schedule flags -> a preset name or a dict of custom schedules."""
    from fusionframes.pipelines.animation import DEFAULT_MOTION

    schedules = {
        SCHEDULE_FLAGS[flag]: getattr(args, flag)
        for flag in SCHEDULE_FLAGS
        if getattr(args, flag) is not None
    }
    motion = args.motion
    if motion is None:
        motion = "custom" if schedules else DEFAULT_MOTION
    if motion == "custom":
        if not schedules:
            raise ValueError(
                "motion: 'custom' needs at least one schedule, e.g. --zoom '0:(1.02)' or --angle '0:(1)'"
            )
        if args.interpolation not in ("linear", "smooth"):
            raise ValueError(f"interpolation: unknown {args.interpolation!r}; allowed: linear, smooth")
        return {**schedules, "interpolation": args.interpolation}
    if schedules:
        flag = next(iter(f for f in SCHEDULE_FLAGS if getattr(args, f) is not None))
        raise ValueError(f"{flag.replace('_', '-')}: schedules need --motion custom, not --motion {motion}")
    return motion


def _number_fps(text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"fps: must be a number of frames per second, got {text!r}") from None


def _prepare(args: argparse.Namespace) -> tuple[Any, Any]:
    """Device, output path and model config: the checks shared by both commands (no loading)."""
    from fusionframes.io.checkpoints import model_config_for
    from fusionframes.io.video import validate_output_path
    from fusionframes.runtime import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    resolve_dtype(args.dtype, device)
    args.output = validate_output_path(options.check_output_text(args.output))
    return device, model_config_for(args.model)


# ---------------------------------------------------------------------------------------------
# animate


def configure_animate(p: argparse.ArgumentParser) -> None:
    p.description = "Animation mode: a virtual camera moves through a picture the model keeps redrawing."
    p.add_argument("prompt", help="what the animation shows")
    options.add_output_option(p, "animation.mp4")
    p.add_argument("--seconds", type=float, default=4.0, help="length in seconds (default 4)")
    _add_animation_options(p, "frames per second (default 24)")
    _add_model_options(p)
    p.set_defaults(handler=run_animate)


def run_animate(args: argparse.Namespace) -> int:
    from fusionframes.pipelines.animation import DEFAULT_FPS, validate_animation

    device, config = _prepare(args)
    plan = validate_animation(
        config,
        args.prompt,
        image=args.image,
        motion=motion_from_args(args),
        seconds=args.seconds,
        fps=_number_fps(args.fps, DEFAULT_FPS),
        width=args.width,
        height=args.height,
        strength=args.strength,
        cadence=args.cadence,
        border=args.border,
        colour_coherence=args.colour_coherence,
        noise=args.noise,
        depth=args.depth,
        steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        negative_prompt=args.negative,
        fov_deg=args.fov,
    )

    import torch

    from fusionframes.pipelines.animation import AnimationPipeline

    pipe = AnimationPipeline.from_pretrained(
        args.model, device=device, dtype=args.dtype, release_text_encoder=True
    )
    options.apply_loras(pipe, args)
    video = pipe.render(plan, torch.Generator("cpu").manual_seed(plan.seed), output_type="np")
    path = video.save(args.output)
    print(
        f"wrote {path} ({len(video.frames)} frames, {plan.width}x{plan.height}, {video.fps:g} fps, "
        f"seed {plan.seed}, {video.timings['total']:.1f} s)"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# movie


def parse_durations(text: str | None) -> list[float] | None:
    """``"4,4,6"`` -> ``[4.0, 4.0, 6.0]`` (checked against the scenes later)."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"durations: expected seconds separated by commas such as 4,4,6; got {text!r}"
        ) from None


def configure_movie(p: argparse.ArgumentParser) -> None:
    p.description = "Render several scenes and join them into one video."
    p.add_argument("scenes", nargs="+", help="one prompt per scene")
    options.add_output_option(p, "movie.mp4")
    p.add_argument("--durations", default=None, help="seconds per scene, comma separated (default 4 each)")
    p.add_argument("--mode", default="t2v", help="t2v (text-to-video scenes) | animate (camera animation)")
    p.add_argument("--transition", default="cut", help="cut | crossfade | continue")
    p.add_argument("--crossfade-frames", type=int, default=None, help="frames blended per crossfade")
    options.add_interpolation_options(p, guidance=False)
    options.add_scheduler_option(p)
    _add_animation_options(p, "t2v mode: low | medium | high; animate mode: frames per second (default 24)")
    _add_model_options(p)
    p.set_defaults(handler=run_movie)


def run_movie(args: argparse.Namespace) -> int:
    from fusionframes.pipelines.animation import DEFAULT_FPS
    from fusionframes.pipelines.movie import MODES, validate_movie

    device, config = _prepare(args)
    if args.mode not in MODES:
        raise ValueError(f"mode: unknown {args.mode!r}; allowed: {', '.join(MODES)}")
    animate = args.mode == "animate"
    scene_options: dict[str, Any] = {
        "fps": _number_fps(args.fps, DEFAULT_FPS) if animate else args.fps,
        "width": args.width,
        "height": args.height,
        "steps": args.steps,
        "guidance_scale": args.guidance,
        "seed": args.seed,
        "negative_prompt": args.negative,
    }
    if animate:
        scene_options |= {
            "image": args.image,
            "motion": motion_from_args(args),
            "strength": args.strength,
            "cadence": args.cadence,
            "border": args.border,
            "colour_coherence": args.colour_coherence,
            "noise": args.noise,
            "depth": args.depth,
            "fov_deg": args.fov,
        }
    else:
        if args.motion is not None or any(getattr(args, flag) is not None for flag in SCHEDULE_FLAGS):
            raise ValueError("motion: camera moves need --mode animate")
        scene_options |= {
            "image": args.image,
            "depth": args.depth,
            "interpolation_steps": args.interpolation_steps,
            "scheduler": args.scheduler,
        }
    plan = validate_movie(
        config,
        args.scenes,
        parse_durations(args.durations),
        args.mode,
        args.transition,
        args.crossfade_frames,
        **scene_options,
    )

    from fusionframes.pipelines.animation import AnimationPipeline
    from fusionframes.pipelines.movie import render_movie

    pipe = AnimationPipeline.from_pretrained(args.model, device=device, dtype=args.dtype)
    options.apply_loras(pipe, args)
    movie = render_movie(pipe, plan, output_type="np")
    path = movie.save(args.output)
    print(
        f"wrote {path} ({len(movie.frames)} frames in {plan.num_scenes} scene(s), {movie.fps:g} fps, "
        f"seed {plan.seed})"
    )
    return 0
