"""Option groups shared by the commands, each declared once, and the value types that bound them.

The names are the API's: ``--scheduler`` is ``scheduler=`` of the pipelines and ``sampling.scheduler``
of a model's config (``--sampler`` is a deprecated alias). Standard library only: the groups are added
while the command line is parsed, before anything heavy is imported.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fusionframes.errors import UsageError

# More denoising steps than the 1000 timesteps a model is trained on only revisit the same noise levels;
# the bound also stops a typo (``--steps 100000000``) from running for hours.
MAX_STEPS = 1000
SEED_LIMIT = 2**63
SCHEDULERS_TEXT = "ddpm | ddim | dpm++2m | unipc"
MODEL_HELP = "builtin (default) | kandinsky-video-1.0 | a model folder"


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            allowed = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def finite_float(low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number, optionally in ``[low, high]``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {value:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


STEPS = bounded_int(1, MAX_STEPS)
SEED = bounded_int(0, SEED_LIMIT - 1)


class DeprecatedAlias(argparse.Action):
    """An old option name that still works, with a one-line warning naming the new one."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_model_options(p: argparse.ArgumentParser, device: bool = True, dtype_default: str = "auto") -> None:
    """Which model, and where and in what precision it runs."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help=MODEL_HELP)
    if device:
        g.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | mps | auto")
    g.add_argument(
        "--dtype",
        default=dtype_default,
        help=f"auto | float32 | float16 | bfloat16 (default {dtype_default})",
    )


def check_output_text(raw: str) -> str:
    """``-o out/noext`` is neither a file format nor a folder (a folder ends in ``/``): refuse it, saying
    both, instead of silently writing a folder of PNGs. An existing folder may be named without the ``/``."""
    if raw.strip() and not raw.endswith(("/", os.sep)) and not Path(raw).suffix and not Path(raw).is_dir():
        raise UsageError(
            f"output: {raw!r} has no extension; add .mp4, .gif or .webp, or write '{raw}/' for a folder "
            "of PNG frames"
        )
    return raw


def check_writable_folder(name: str, folder: Path) -> None:
    """Create and remove a file in ``folder``, so a read-only place fails now, not after the work."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".fusionframes-probe-", dir=folder)
    except OSError as error:
        raise PermissionError(f"{name}: cannot write in {folder} ({error.strerror or error})") from None
    os.close(handle)
    os.unlink(probe)


def add_output_option(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "-o", "--output", default=default, help="output file: .mp4, .gif, .webp, or DIR/ for PNG frames"
    )


def add_prompt_options(p: argparse.ArgumentParser) -> None:
    """The negative prompt and the seed."""
    p.add_argument("--negative", default=None, help="negative prompt (what to avoid)")
    p.add_argument("--seed", type=SEED, default=None, help="random seed (default: random, printed)")


def add_size_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=bounded_int(1), default=None, help="frame width (default: the model's)")
    p.add_argument("--height", type=bounded_int(1), default=None, help="frame height (default: the model's)")


def add_scheduler_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler", default=None, help=f"denoising scheduler: {SCHEDULERS_TEXT} (default: the model's)"
    )
    p.add_argument("--sampler", dest="scheduler", action=DeprecatedAlias, new="--scheduler")


def add_keyframe_options(
    p: argparse.ArgumentParser, layout: bool = True, steps_help: str | None = None
) -> None:
    """Keyframe sampling: steps, guidance, scheduler and (models with a layout prior) the layout strength."""
    p.add_argument(
        "--steps",
        type=STEPS,
        default=None,
        help=steps_help or f"denoising steps for keyframes, 1..{MAX_STEPS} (default: the model's)",
    )
    p.add_argument(
        "--guidance", type=finite_float(0.0), default=None, help="classifier-free guidance weight (>= 0)"
    )
    add_scheduler_option(p)
    if layout:
        p.add_argument(
            "--layout-strength",
            type=finite_float(),
            default=None,
            help="models with a layout prior: share of keyframe steps run from its layout, (0, 1]; "
            "1 ignores it (default: the model's)",
        )


def add_interpolation_options(p: argparse.ArgumentParser, guidance: bool = True) -> None:
    p.add_argument(
        "--interpolation-steps",
        type=STEPS,
        default=None,
        help=f"denoising steps per interpolation pass, 1..{MAX_STEPS} (default: the model's)",
    )
    if guidance:
        p.add_argument(
            "--interpolation-guidance",
            type=finite_float(0.0),
            default=None,
            help="interpolation guidance weight (>= 0)",
        )


def check_device_and_dtype(args: argparse.Namespace) -> Any:
    """Resolve ``--device`` and check ``--dtype`` against it (imports torch); returns the device."""
    from fusionframes.runtime import resolve_device, resolve_dtype

    device = resolve_device(getattr(args, "device", "cpu"))
    resolve_dtype(args.dtype, device)
    return device


def lora_argument(text: str) -> Any:
    """``--lora PATH[:SCALE]``: the adapter folder is read and checked while the arguments are parsed,
    so a missing or corrupt adapter or a bad scale stops the command before a model is loaded."""
    from fusionframes.lora.pipeline import parse_lora_argument

    try:
        return parse_lora_argument(text)
    except (OSError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_lora_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lora",
        action="append",
        type=lora_argument,
        default=None,
        metavar="PATH[:SCALE]",
        help="apply a LoRA adapter folder at SCALE (default 1; 0 = off); repeatable",
    )


def apply_loras(pipe: Any, args: argparse.Namespace) -> list[str]:
    """Attach the ``--lora`` adapters to ``pipe``'s networks (refused for another base model)."""
    from fusionframes.lora.pipeline import apply_lora_requests

    return apply_lora_requests(pipe.lora_components, getattr(args, "lora", None))
