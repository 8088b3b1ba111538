"""``fusionframes generate`` with a Kandinsky Video 1.1 model: first image, motion and the 1.1 weights."""

from __future__ import annotations

import argparse
from typing import Any

from fusionframes.cli import options
from fusionframes.errors import UsageError

# dest -> option name; these only mean something for a 1.1 model
KV11_OPTIONS = {
    "image": "--image",
    "motion": "--motion",
    "image_guidance": "--image-guidance",
    "first_frame_guidance": "--first-frame-guidance",
    "noise_augmentation": "--noise-augmentation",
    "decoder": "--decoder",
    "keep_first_frame": "--keep-first-frame",
    "decode_window": "--decode-window",
    "decode_overlap": "--decode-overlap",
}


def motion_value(text: str) -> str | float:
    """A motion name, or a number given as text."""
    try:
        return float(text)
    except ValueError:
        return text


def add_kv11_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Kandinsky Video 1.1 models")
    g.add_argument("--image", default=None, help="first frame to animate (image-to-video); a PNG/JPEG path")
    g.add_argument(
        "--motion",
        type=motion_value,
        default=None,
        help="low | medium | high | extreme, or a motion score in [0, 1000] (default: medium)",
    )
    g.add_argument(
        "--image-guidance",
        type=options.finite_float(),
        default=None,
        help="weight of the first-frame condition (2)",
    )
    g.add_argument(
        "--first-frame-guidance",
        type=options.finite_float(),
        default=None,
        help="guidance of the drawn first frame (5); --guidance is the keyframes' prompt weight (5)",
    )
    g.add_argument(
        "--noise-augmentation",
        type=options.bounded_int(0, 999),
        default=None,
        help="noise level of the first-frame condition, a timestep in [0, 999] (20)",
    )
    g.add_argument("--decoder", default=None, help="video (temporal MoVQ, default) | image (frame by frame)")
    g.add_argument(
        "--keep-first-frame",
        action="store_true",
        default=None,
        help="frame 0 is the first frame's own latent (the video starts exactly on --image)",
    )
    g.add_argument(
        "--decode-window",
        type=options.bounded_int(1),
        default=None,
        help="decode the temporal MoVQ in windows of this many frames (default: the reference's pieces)",
    )
    g.add_argument(
        "--decode-overlap",
        type=options.bounded_int(0),
        default=None,
        help="frames shared by neighbouring windows",
    )


def refuse_kv11_options(args: argparse.Namespace, model: Any, allowed: frozenset[str] = frozenset()) -> None:
    """A 1.0 / built-in model has no first-frame condition or motion: say so instead of ignoring it.

    ``allowed``: the options its 1.1 parts take (:func:`builtin11_options`)."""
    for dest, flag in KV11_OPTIONS.items():
        if dest not in allowed and getattr(args, dest, None) is not None:
            raise UsageError(
                f"{flag}: only Kandinsky Video 1.1 models take it; --model {model or 'builtin'} is not one"
            )


def builtin11_options(config: Any) -> frozenset[str]:
    """The 1.1 options a 1.0-layout model takes: --image with an image-to-video U-Net, --decoder with a
    temporal MoVQ (see fusionframes.pipelines.builtin11)."""
    allowed = set()
    if getattr(config, "image_keyframe_unet", None) is not None:
        allowed.add("image")
    if getattr(config, "video_movq", None) is not None:
        allowed.add("decoder")
    return frozenset(allowed)


def run_generate_11(args: argparse.Namespace, config: Any) -> int:
    import torch

    from fusionframes.cli.generate import load_options
    from fusionframes.io.video import validate_output_path
    from fusionframes.pipelines.kandinsky11 import KandinskyVideo11Pipeline, validate_settings_11

    _, load = load_options(args)
    output = validate_output_path(options.check_output_text(args.output))
    if getattr(args, "decode_chunk", None) is not None:
        raise UsageError(
            "--decode-chunk: a 1.1 model's temporal decoder sees a whole clip; bound its memory with "
            "--decode-window N [--decode-overlap M] (the image decoder decodes one frame at a time)"
        )
    if getattr(args, "scheduler", None) not in (None, "ddpm"):
        raise UsageError("--scheduler: Kandinsky Video 1.1 samples with its trained DDPM only; allowed: ddpm")
    settings, image = validate_settings_11(
        config,
        args.prompt,
        args.negative,
        args.image,
        {
            "width": args.width,
            "height": args.height,
            "fps": args.fps,
            "motion": args.motion,
            "guidance_weight_prompt": args.guidance,
            "guidance_weight_image": args.image_guidance,
            "key_frame_guidance_scale": args.first_frame_guidance,
            "interpolation_guidance_scale": args.interpolation_guidance,
            "noise_augmentation": args.noise_augmentation,
            "decoder": args.decoder,
            "num_inference_steps": args.steps,
            "interpolation_steps": args.interpolation_steps,
            "keep_first_frame": args.keep_first_frame,
            "decode_window": args.decode_window,
            "decode_overlap": args.decode_overlap,
        },
        args.seed,
    )
    pipe = KandinskyVideo11Pipeline.from_pretrained(args.model, **load)
    if settings.decoder not in pipe.decoders():
        raise UsageError(
            f"--decoder: {settings.decoder!r} is not available; allowed: {', '.join(pipe.decoders())}"
        )
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    video = pipe.generate_11(settings, image, generator, output_type="np")
    path = video.save(output)
    print(
        f"wrote {path} ({len(video.frames)} frames, {settings.width}x{settings.height}, "
        f"{video.fps:g} fps, motion {settings.motion_score:g}, seed {settings.seed})"
    )
    return 0
