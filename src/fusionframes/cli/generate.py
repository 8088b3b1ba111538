"""``fusionframes generate``, ``models`` and ``convert``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fusionframes.cli import options
from fusionframes.cli.generate11 import (
    add_kv11_options,
    builtin11_options,
    refuse_kv11_options,
    run_generate_11,
)
from fusionframes.errors import UsageError


def configure_generate(p: argparse.ArgumentParser) -> None:
    p.description = "Text to video."
    p.add_argument("prompt", help="what the video shows")
    options.add_output_option(p, "video.mp4")
    p.add_argument(
        "--fps", default=None, help="low (keyframes) | medium (4N-3 frames) | high (16N-15 frames)"
    )
    options.add_size_options(p)
    options.add_prompt_options(p)
    options.add_keyframe_options(p)
    options.add_interpolation_options(p)
    options.add_model_options(p)
    options.add_lora_option(p)
    add_kv11_options(p)
    g = p.add_argument_group("memory and speed")
    g.add_argument(
        "--decode-chunk",
        type=options.bounded_int(1),
        default=None,
        help="frames decoded at once (memory vs speed; default 4); 1.1 models: --decode-window",
    )
    g.add_argument(
        "--offload",
        default="none",
        help="none | model (one network at a time on the GPU) | sequential (per layer, least memory)",
    )
    g.add_argument(
        "--compile",
        nargs="?",
        const="unets",
        default="none",
        help="torch.compile the U-Nets (--compile or --compile unets) or also the MoVQ decoder (all)",
    )
    g.add_argument(
        "--text-quantization",
        default="none",
        help="none | int8 (T5 linear weights in int8 via torchao: half the memory of bfloat16)",
    )
    g.add_argument(
        "--decoder-dtype",
        default="auto",
        help="precision of the MoVQ decoders: auto (float32 beside float16 U-Nets, else as --dtype) | "
        "float32 | bfloat16 | float16",
    )
    g.add_argument(
        "--split-branches",
        action="store_true",
        help="run each guidance branch of the U-Nets as its own call: the widest stage's memory / 2-3, "
        "same video",
    )
    p.set_defaults(handler=run_generate)


def load_options(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The checked precision and the ``from_pretrained`` options of the device and memory flags (both
    generate commands check them first, before any model is read)."""
    from fusionframes.pipelines.acceleration import validate_compile
    from fusionframes.pipelines.offload import validate_offload
    from fusionframes.runtime import resolve_decoder_dtype, resolve_device, resolve_dtype
    from fusionframes.text.quantization import validate_text_quantization

    device = resolve_device(args.device)
    precision = resolve_dtype(args.dtype, device)
    offload = validate_offload(args.offload, device)
    resolve_decoder_dtype(args.decoder_dtype, precision.dtype)  # a bad --decoder-dtype fails here
    return precision, {
        "device": device,
        "dtype": args.dtype,
        "release_text_encoder": True,
        "offload": offload,
        "compile": validate_compile(args.compile, offload),
        "text_quantization": validate_text_quantization(args.text_quantization),
        "decoder_dtype": args.decoder_dtype,
        "split_branches": args.split_branches,
    }


def run_generate(args: argparse.Namespace) -> int:
    from fusionframes.io.checkpoints import model_config_for
    from fusionframes.io.video import validate_output_path
    from fusionframes.pipelines.kandinsky11 import config_11_for
    from fusionframes.pipelines.text_to_video import validate_settings

    precision, load = load_options(args)
    config_11 = config_11_for(args.model)
    if config_11 is not None:
        return run_generate_11(args, config_11)
    config = model_config_for(args.model)
    refuse_kv11_options(args, args.model, builtin11_options(config))
    output = validate_output_path(options.check_output_text(args.output))
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
        scheduler=args.scheduler,
        decode_chunk_size=args.decode_chunk or 4,
        layout_prior_strength=args.layout_strength,
        decoder=args.decoder,
        image=args.image,
    )
    import logging

    logging.getLogger(__name__).info("precision %s: %s", precision.dtype, precision.reason)

    import torch

    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(args.model, **load)
    options.apply_loras(pipe, args)
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    video = pipe.generate(settings, generator, output_type="np", image=args.image)
    path = video.save(output)
    print(
        f"wrote {path} ({len(video.frames)} frames, {video.settings.width}x{video.settings.height}, "
        f"{video.fps:g} fps, seed {settings.seed})"
    )
    return 0


def configure_models(p: argparse.ArgumentParser) -> None:
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
        report = {
            "models": rows,
            "device": str(device),
            "auto_dtype": str(precision.dtype),
            "auto_dtype_reason": precision.reason,
        }
        print(json.dumps(report, indent=2))
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


def configure_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("--release", choices=("1.0", "1.1"), default="1.0", help="which Kandinsky Video release")
    p.add_argument(
        "--weights-dir",
        default=None,
        help="1.1: folder with t2v.pt, interpolation.pt, movq.pt, video_movq.pt, t5_projections.pt and "
        "optionally configs.json (default: from the Hub)",
    )
    p.add_argument("--keyframe-weights", default=None, help="kandinsky_video.pt (default: from the Hub)")
    p.add_argument("--interpolation-weights", default=None, help="kandinsky_video_interpolation.pt")
    p.add_argument("--movq-weights", default=None, help="movq.pt")
    p.add_argument("--text-encoder", default=None, help="T5 folder or Hub id (default google/flan-ul2)")
    p.add_argument("--copy-text-encoder", action="store_true", help="copy a local T5 folder into the output")
    p.add_argument("--config", default=None, help="ModelConfig JSON for non-release sizes (default: 1.0)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.set_defaults(handler=run_convert)


def read_json_option(name: str, path: str | Path) -> object:
    """The JSON in the file an option names, with errors that say which option and what is wrong."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{name}: file not found: {file}")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"{name}: {file} is not a text file (not UTF-8)") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{name}: {file} is not valid JSON ({error})") from None


def _load_release_11(args: argparse.Namespace, config):
    """The 1.1 release from a folder of its files (official names) or from the Hub."""
    given = [
        f"--{n}"
        for n in ("keyframe-weights", "interpolation-weights", "movq-weights")
        if getattr(args, n.replace("-", "_"))
    ]
    if given:
        raise UsageError(f"{given[0].lstrip('-')}: a 1.0 option; with --release 1.1 use --weights-dir")
    from fusionframes.io import official_kv11

    encoder = args.text_encoder or official_kv11.TEXT_ENCODER
    if args.weights_dir:
        if not Path(args.weights_dir).is_dir():
            raise UsageError(f"weights-dir: folder not found: {args.weights_dir}")
        files = official_kv11.ReleaseFiles.from_folder(args.weights_dir, encoder)
    else:
        files = official_kv11.hub_files(text_encoder=encoder)
    return official_kv11.load_release(files, config)


def run_convert(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"out: parent folder does not exist: {out.parent}")
    if args.copy_text_encoder and not (args.text_encoder and Path(args.text_encoder).is_dir()):
        raise UsageError("copy-text-encoder: needs --text-encoder pointing at a local T5 folder")
    config = None
    if args.config:
        from fusionframes.config import ModelConfig

        data = read_json_option("config", args.config)
        if not isinstance(data, dict):
            raise UsageError(f"config: {args.config} must hold a JSON object (a ModelConfig)")
        try:
            config = ModelConfig.from_dict(data)
        except (TypeError, ValueError) as error:
            raise UsageError(f"config: {args.config}: {error}") from None

    from fusionframes.io.checkpoints import load_official, resolve_official_files, write_model_folder

    if args.release == "1.1":
        components = _load_release_11(args, config)
    else:
        if args.weights_dir:
            raise UsageError("weights-dir: only with --release 1.1 (1.0 takes --keyframe-weights etc.)")
        files = resolve_official_files(
            args.keyframe_weights, args.interpolation_weights, args.movq_weights, args.text_encoder
        )
        components = load_official(files, config)
    text_dir = Path(args.text_encoder) if args.copy_text_encoder else None
    if text_dir is None and args.text_encoder and Path(args.text_encoder).is_dir():
        components.text_encoder = str(Path(args.text_encoder).resolve())
    write_model_folder(components, out, text_encoder_dir=text_dir)
    print(f"wrote model folder {out}")
    return 0
