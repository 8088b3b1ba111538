"""``fusionframes lora merge``: bake adapters into a new model folder (no peft needed to run it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fusionframes.cli import options


def configure_lora(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="lora_command", required=True)
    m = sub.add_parser(
        "merge",
        help="fold LoRA adapters into a model's weights and write a new model folder",
        description="Load a model, apply each --lora PATH[:SCALE], add the low-rank updates into the "
        "weights, and write the result as a model folder (float32; it generates what the loaded adapters "
        "do).",
    )
    m.add_argument("--model", default=None, help=options.MODEL_HELP)
    m.add_argument(
        "--lora",
        action="append",
        type=options.lora_argument,
        required=True,
        metavar="PATH[:SCALE]",
        help="an adapter folder (and its scale, default 1); repeatable",
    )
    m.add_argument("--out", required=True, help="model folder to write (must not exist)")
    m.add_argument("--name", default=None, help="model name stored in the manifest (default: base+adapters)")
    m.set_defaults(handler=run_merge)


def run_merge(args: argparse.Namespace) -> int:
    from fusionframes.errors import UsageError

    out = Path(args.out)
    if out.exists():
        raise UsageError(f"out: {out} already exists; give a new folder")
    options.check_writable_folder("out", out.parent)
    from fusionframes.io.checkpoints import load_model, write_model_folder
    from fusionframes.lora.pipeline import apply_lora_requests, merge_loras

    components = load_model(args.model)
    names = apply_lora_requests(components, args.lora)
    merged = merge_loras(components)
    components.name = args.name or "+".join([components.name, *names])
    text_dir = Path(str(components.text_encoder))
    metadata = {
        "merged_lora": [
            {"adapter": str(r.adapter.path), "scale": r.scale, "base_hash": r.adapter.base_hash}
            for r in args.lora
        ]
    }
    write_model_folder(
        components, out, text_encoder_dir=text_dir if text_dir.is_dir() else None, metadata=metadata
    )
    print(f"merged {', '.join(merged)} into {out}")
    return 0
