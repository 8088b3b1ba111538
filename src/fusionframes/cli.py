"""Command line: argument parsing and validation only; the work happens in the package API.

Every option is checked before any model is loaded, and errors are one line naming the option.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fusionframes.cli_animation import add_animate, add_movie
from fusionframes.cli_eval import add_eval
from fusionframes.serve.cli import add_serve

Handler = Callable[[argparse.Namespace], int]


class UsageError(ValueError):
    """A bad option value; printed as one line and exit status 2."""


# ---------------------------------------------------------------------------------------------
# generate


def add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="make a video from a prompt", description="Text to video.")
    p.add_argument("prompt", help="what the video shows")
    p.add_argument(
        "-o", "--output", default="video.mp4", help="output file: .mp4, .gif, .webp, or DIR/ for PNGs"
    )
    p.add_argument("--negative", default=None, help="negative prompt (what to avoid)")
    p.add_argument(
        "--fps", default=None, help="low (keyframes) | medium (4N-3 frames) | high (16N-15 frames)"
    )
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="denoising steps for keyframes")
    p.add_argument("--interpolation-steps", type=int, default=None, help="denoising steps per interpolation")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight (>= 0)")
    p.add_argument("--interpolation-guidance", type=float, default=None, help="interpolation guidance (>= 0)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--sampler", default=None, help="denoising sampler (default: the model's)")
    p.add_argument(
        "--layout-strength",
        type=float,
        default=None,
        help="models with a layout prior: share of keyframe steps run from its layout, (0, 1]; 1 ignores it",
    )
    p.add_argument("--model", default=None, help="builtin (default) | kandinsky-video-1.0 | a model folder")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | mps | auto")
    p.add_argument("--dtype", default="auto", help="auto | float32 | float16 | bfloat16")
    p.add_argument("--decode-chunk", type=int, default=4, help="frames decoded at once (memory vs speed)")
    p.add_argument(
        "--offload",
        default="none",
        help="none | model (one network at a time on the GPU) | sequential (per layer, least memory)",
    )
    p.add_argument(
        "--compile",
        nargs="?",
        const="unets",
        default="none",
        help="torch.compile the U-Nets (--compile or --compile unets) or also the MoVQ decoder (all)",
    )
    p.add_argument(
        "--text-quantization",
        default="none",
        help="none | int8 (T5 linear weights in int8 via torchao: half the memory of bfloat16)",
    )
    p.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from fusionframes.io.checkpoints import model_config_for
    from fusionframes.io.video import validate_output_path
    from fusionframes.pipelines.acceleration import validate_compile
    from fusionframes.pipelines.offload import validate_offload
    from fusionframes.pipelines.text_to_video import validate_settings
    from fusionframes.runtime import resolve_device, resolve_dtype
    from fusionframes.text.quantization import validate_text_quantization

    device = resolve_device(args.device)
    precision = resolve_dtype(args.dtype, device)
    offload = validate_offload(args.offload, device)
    compile_choice = validate_compile(args.compile, offload)
    text_quantization = validate_text_quantization(args.text_quantization)
    output = validate_output_path(args.output)
    config = model_config_for(args.model)
    settings = validate_settings(
        config,
        args.prompt,
        args.negative,
        args.width,
        args.height,
        args.fps,
        args.steps,
        args.interpolation_steps,
        args.guidance,
        args.interpolation_guidance,
        args.seed,
        scheduler=args.sampler,
        decode_chunk_size=args.decode_chunk,
        layout_prior_strength=args.layout_strength,
    )
    logging.getLogger(__name__).info("precision %s: %s", precision.dtype, precision.reason)

    import torch

    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(
        args.model,
        device=device,
        dtype=args.dtype,
        release_text_encoder=True,
        offload=offload,
        compile=compile_choice,
        text_quantization=text_quantization,
    )
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    video = pipe.generate(settings, generator, output_type="np")
    path = video.save(output)
    print(
        f"wrote {path} ({len(video.frames)} frames, {video.settings.width}x{video.settings.height}, "
        f"{video.fps:g} fps, seed {settings.seed})"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# models / convert


def add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models this install can use")
    p.add_argument("--device", default="auto", help="device to report the automatic precision for")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run_models)


def run_models(args: argparse.Namespace) -> int:
    from fusionframes.io.checkpoints import list_models
    from fusionframes.runtime import resolve_device, resolve_dtype

    rows = list_models()
    device = resolve_device(args.device)
    precision = resolve_dtype("auto", device)
    if args.json:
        print(
            json.dumps(
                {
                    "models": rows,
                    "device": str(device),
                    "auto_dtype": str(precision.dtype),
                    "auto_dtype_reason": precision.reason,
                },
                indent=2,
            )
        )
        return 0
    for row in rows:
        status = "ready" if row["available"] else "not downloaded"
        print(f"{row['name']}  [{status}]  {row['source']}")
        if row.get("description"):
            print(f"    {row['description']}")
        if row.get("parameters"):
            print(f"    parameters: {row['parameters']:,}; files: {row['size_bytes'] / 2**20:.1f} MiB")
        if row.get("vocabulary"):
            print(f"    knows {len(row['vocabulary'])} words: {' '.join(row['vocabulary'])}")
    print(f"device {device}: automatic precision {precision.dtype} ({precision.reason})")
    return 0


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="turn the released .pt files into a model folder (safetensors)")
    p.add_argument("--keyframe-weights", default=None, help="kandinsky_video.pt (default: from the Hub)")
    p.add_argument("--interpolation-weights", default=None, help="kandinsky_video_interpolation.pt")
    p.add_argument("--movq-weights", default=None, help="movq.pt")
    p.add_argument("--text-encoder", default=None, help="T5 folder or Hub id (default google/flan-ul2)")
    p.add_argument("--copy-text-encoder", action="store_true", help="copy a local T5 folder into the output")
    p.add_argument("--config", default=None, help="ModelConfig JSON for non-release sizes (default: 1.0)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from fusionframes.io.checkpoints import load_official, resolve_official_files, write_model_folder

    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"out: parent folder does not exist: {out.parent}")
    if args.copy_text_encoder and not (args.text_encoder and Path(args.text_encoder).is_dir()):
        raise UsageError("copy-text-encoder: needs --text-encoder pointing at a local T5 folder")
    files = resolve_official_files(
        args.keyframe_weights, args.interpolation_weights, args.movq_weights, args.text_encoder
    )
    config = None
    if args.config:
        from fusionframes.config import ModelConfig

        config = ModelConfig.from_dict(json.loads(Path(args.config).read_text()))
    components = load_official(files, config)
    text_dir = Path(args.text_encoder) if args.copy_text_encoder else None
    if text_dir is None and args.text_encoder and Path(args.text_encoder).is_dir():
        components.text_encoder = str(Path(args.text_encoder).resolve())
    write_model_folder(components, out, text_encoder_dir=text_dir)
    print(f"wrote model folder {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# data / train


def add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="make training data")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser(
        "synth", help="write the synthetic captioned-video world as WebDataset shards"
    )
    synth.add_argument("--out", required=True, help="folder for the shards (created)")
    synth.add_argument("--videos", type=int, default=1000)
    synth.add_argument("--size", type=int, default=128)
    synth.add_argument("--frames", type=int, default=29, help="frames per clip (29 = 8 keyframes 4 apart)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--shard-size", type=int, default=1000, help="clips per tar shard")
    synth.add_argument(
        "--path-jitter",
        type=float,
        default=None,
        help="centre every object's path in the frame, offset by at most this fraction (0-0.5); "
        "default: paths anywhere they fit",
    )
    synth.set_defaults(handler=run_data_synth)


def run_data_synth(args: argparse.Namespace) -> int:
    for name in ("videos", "size", "frames", "shard_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if args.size < 32:
        raise UsageError(f"size: must be >= 32 pixels, got {args.size}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"out: parent folder does not exist: {out.parent}")
    from fusionframes.synthetic import write_shards

    shards = write_shards(
        out,
        args.videos,
        size=args.size,
        frames=args.frames,
        seed=args.seed,
        shard_size=args.shard_size,
        path_jitter=args.path_jitter,
    )
    print(f"wrote {args.videos} clips in {len(shards)} shard(s) to {out}")
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a stage: movq | keyframes | interpolation")
    p.add_argument("stage", choices=["movq", "keyframes", "interpolation"])
    p.add_argument("--config", required=True, help="YAML or JSON training config")
    p.add_argument("--data", required=True, help="WebDataset shards folder, or videos + captions.csv/jsonl")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, final model/)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--init", default=None, help="start from this model folder (overrides the config)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from fusionframes.training.config import load_train_config

    cfg = load_train_config(args.config, stage=args.stage, max_steps=args.max_steps, init_from=args.init)
    data = Path(args.data)
    if not data.exists():
        raise FileNotFoundError(f"data: folder not found: {data}")
    if not data.is_dir() or not any(data.iterdir()):
        raise UsageError(f"data: {data} is empty or not a folder")
    if args.resume:
        from fusionframes.training.state import latest_checkpoint

        if latest_checkpoint(Path(args.out)) is None:
            raise FileNotFoundError(f"resume: no complete checkpoint under {Path(args.out) / 'checkpoints'}")
    from fusionframes.training.loop import train

    try:
        summary = train(cfg, data, args.out, resume=args.resume)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():  # under torchrun: leave the process group cleanly (gloo aborts otherwise)
            dist.destroy_process_group()
    if summary["history"]:
        print(
            f"trained {cfg.stage} to step {summary['history'][-1][0] + 1}; "
            f"model in {Path(args.out) / 'model'}"
        )
    return 0


def add_assemble(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("assemble", help="join a keyframe run and an interpolation run into one model folder")
    p.add_argument("--keyframes", required=True, help="model folder of the keyframe stage")
    p.add_argument("--interpolation", required=True, help="model folder of the interpolation stage")
    p.add_argument("--movq", default=None, help="take the MoVQ from this folder (a decoder fine-tune)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--name", default="fusionframes-model", help="model name stored in the manifest")
    p.add_argument(
        "--sampling", default=None, help="JSON sampling defaults, e.g. '{\"num_inference_steps\": 20}'"
    )
    p.add_argument("--description", default=None, help="one line shown by `fusionframes models`")
    p.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    p.set_defaults(handler=run_assemble)


def run_assemble(args: argparse.Namespace) -> int:
    sampling = None
    if args.sampling is not None:
        try:
            sampling = json.loads(args.sampling)
        except json.JSONDecodeError as error:
            raise UsageError(f"sampling: not valid JSON ({error})") from None
        if not isinstance(sampling, dict):
            raise UsageError("sampling: must be a JSON object")
    for name in ("keyframes", "interpolation", "movq"):
        if getattr(args, name) is not None and not Path(getattr(args, name)).is_dir():
            raise FileNotFoundError(f"{name}: model folder not found: {getattr(args, name)}")
    import torch

    from fusionframes.training.assemble import assemble_model

    path = assemble_model(
        args.keyframes,
        args.interpolation,
        args.out,
        args.name,
        sampling,
        torch.float16 if args.half else torch.float32,
        metadata={"description": args.description} if args.description else None,
        movq=args.movq,
    )
    print(f"wrote {path}")
    return 0


def add_layout_prior_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "layout-prior",
        help="fit a text-to-layout prior for a model folder and write the model with it",
        description="Regress each caption's keyframe latents from its pooled text (minutes on a CPU); "
        "keyframe sampling then starts from that layout (docs/training.md, 'Layout prior').",
    )
    p.add_argument("--model", required=True, help="model folder to add the prior to")
    p.add_argument("--data", required=True, help="WebDataset shards folder, or videos + captions.csv/jsonl")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--strength", type=float, default=0.6, help="the model's default layout strength, (0, 1]")
    p.add_argument(
        "--blur", type=float, default=0.0, help="Gaussian sigma (latent pixels) on the layout, [0, 16]"
    )
    p.add_argument(
        "--foreground-weight", type=float, default=50.0, help="extra loss weight where objects are"
    )
    p.add_argument("--keyframe-stride", type=int, default=4, help="frames between keyframes in the clips")
    p.add_argument(
        "--object-slots",
        type=int,
        default=0,
        help="objects to track per clip (needs data with object tracks, as `fusionframes data synth` "
        "writes); 0 draws the layout from the text alone",
    )
    p.add_argument(
        "--object-labels",
        default="",
        help="comma-separated keys of each tracked object to predict and draw it with, for example "
        "colour,shape (the synthetic world's tracks carry both); empty: a code from the pooled caption",
    )
    p.add_argument("--track-steps", type=int, default=4000, help="training steps of the track predictor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="file to cache the clips' MoVQ latents in")
    p.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    p.set_defaults(handler=run_layout_prior)


def run_layout_prior(args: argparse.Namespace) -> int:
    for name in ("model", "data"):
        if not Path(getattr(args, name)).exists():
            raise FileNotFoundError(f"{name}: not found: {getattr(args, name)}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"out: parent folder does not exist: {out.parent}")
    import torch

    from fusionframes.training.layout_prior import PriorTraining, add_layout_prior

    settings = PriorTraining(
        steps=args.steps,
        foreground_weight=args.foreground_weight,
        keyframe_stride=args.keyframe_stride,
        seed=args.seed,
        object_slots=args.object_slots,
        object_label_keys=tuple(k.strip() for k in args.object_labels.split(",") if k.strip()),
        track_steps=args.track_steps,
    )
    path, report = add_layout_prior(
        args.model,
        args.data,
        out,
        settings,
        args.strength,
        torch.float16 if args.half else torch.float32,
        blur=args.blur,
        cache=args.cache,
    )
    print(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_generate,
    add_models,
    add_convert,
    add_data,
    add_train,
    add_assemble,
    add_layout_prior_command,
    add_animate,
    add_movie,
    add_serve,
    add_eval,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusionframes", description="Text-to-video with Kandinsky Video.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log choices (precision, devices)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def quiet_optional_library_logs() -> None:
    """With torchao installed, transformers imports it at load time, and on a CPU-only torch that logs
    warnings about CUDA kernels it cannot load; they concern no path this tool takes."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        quiet_optional_library_logs()
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, FloatingPointError, ImportError) as error:
        print(f"fusionframes {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
