"""``fusionframes data synth``, ``train``, ``assemble`` and ``layout-prior``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fusionframes.errors import UsageError


def configure_data(p: argparse.ArgumentParser) -> None:
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
    synth.add_argument(
        "--new-colour-share",
        type=float,
        default=0.0,
        help="probability (0-1, below 1) that an object takes a colour outside the built-in vocabulary "
        "(pink), for teaching an adapter a new word; default 0",
    )
    synth.add_argument(
        "--new-shape-share",
        type=float,
        default=0.0,
        help="probability (0-1) that an object takes a shape outside the built-in vocabulary (oval), for "
        "teaching an adapter a new word; default 0",
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
        new_colour_share=args.new_colour_share,
        new_shape_share=args.new_shape_share,
    )
    print(f"wrote {args.videos} clips in {len(shards)} shard(s) to {out}")
    return 0


def configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=["movq", "keyframes", "interpolation"])
    p.add_argument("--config", required=True, help="YAML or JSON training config")
    p.add_argument("--data", required=True, help="WebDataset shards folder, or videos + captions.csv/jsonl")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, final model/)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--init", default=None, help="start from this model folder (overrides the config)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument(
        "--lora",
        metavar="RANK",
        default=None,
        help="train a LoRA adapter of this rank instead of the whole network (keyframes, interpolation; "
        "needs --init or init_from); writes run/adapter",
    )
    p.add_argument(
        "--lora-alpha", metavar="A", default=None, help="LoRA alpha (update scale alpha/rank; default rank)"
    )
    p.add_argument(
        "--lora-targets",
        default=None,
        help="layers to adapt: attention (default) | attention+temporal | all-linear | a regular expression "
        "searched in the layer names",
    )
    p.set_defaults(handler=run_train)


def _number(value: str | None, name: str, kind: type) -> int | float | None:
    """A command-line number, or a UsageError naming the option (the config then checks its range)."""
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise UsageError(f"{name}: must be {what}, got {value!r}") from None


def run_train(args: argparse.Namespace) -> int:
    from fusionframes.training.config import load_train_config

    cfg = load_train_config(
        args.config,
        stage=args.stage,
        max_steps=args.max_steps,
        init_from=args.init,
        lora_rank=_number(args.lora, "lora", int),
        lora_alpha=_number(args.lora_alpha, "lora-alpha", float),
        lora_targets=args.lora_targets,
    )
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
        what = "adapter" if cfg.lora_rank else "model"
        step = summary["history"][-1][0] + 1
        print(f"trained {cfg.stage} to step {step}; {what} in {Path(args.out) / what}")
    return 0


def configure_assemble(p: argparse.ArgumentParser) -> None:
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


def configure_layout_prior(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Regress each caption's keyframe latents from its pooled text (minutes on a CPU); "
        "keyframe sampling then starts from that layout (docs/training.md, 'Layout prior')."
    )
    p.add_argument("--model", required=True, help="model folder to add the prior to")
    p.add_argument("--data", required=True, help="WebDataset shards folder, or videos + captions.csv/jsonl")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--strength", type=float, default=0.6, help="the model's default layout strength, (0, 1]")
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

    from fusionframes.layout_prior.fitting import PriorTraining, add_layout_prior

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
        cache=args.cache,
    )
    print(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0


def configure_add_parts(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Add the Kandinsky Video 1.1 parts trained from a model folder (the temporal decoder of a "
        "`train movq` run with video_decoder, the image-to-video U-Net of a `train keyframes` run with "
        "first_frame_condition) to it (docs/training.md, 'Kandinsky Video 1.1 parts')."
    )
    p.add_argument("--model", required=True, help="the model folder both runs started from")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--video-movq", default=None, help="model folder of the temporal decoder's run")
    p.add_argument("--image-keyframes", default=None, help="model folder of the image-to-video run")
    p.add_argument(
        "--image-decoder",
        default=None,
        help="model folder of a `train movq` run with freeze_encoder: its image MoVQ replaces the model's",
    )
    p.add_argument("--decoder", choices=["image", "video"], default=None, help="the default decoder")
    p.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    p.set_defaults(handler=run_add_parts)


def run_add_parts(args: argparse.Namespace) -> int:
    for name in ("model", "video_movq", "image_keyframes", "image_decoder"):
        value = getattr(args, name)
        if value is not None and not Path(value).is_dir():
            raise FileNotFoundError(f"{name.replace('_', '-')}: model folder not found: {value}")
    if all(getattr(args, n) is None for n in ("video_movq", "image_keyframes", "image_decoder", "decoder")):
        raise UsageError("add-parts: give --video-movq, --image-keyframes, --image-decoder or --decoder")
    import torch

    from fusionframes.training.stages11 import add_parts

    path = add_parts(
        args.model,
        args.out,
        args.video_movq,
        args.image_keyframes,
        args.decoder,
        torch.float16 if args.half else torch.float32,
        args.image_decoder,
    )
    print(f"wrote {path}")
    return 0
