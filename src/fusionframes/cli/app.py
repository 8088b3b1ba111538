"""The ``fusionframes`` parser, the command registry and ``main`` with its one error policy.

Only the standard library is imported here. The top-level parser lists every command by name and help
line; the options of a command are added (by importing its module) only for the command being run, so
``fusionframes --help`` and a typo cost milliseconds, not a ``torch`` import.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from fusionframes.errors import UsageError, is_user_error, one_line

Handler = Callable[[argparse.Namespace], int]
PROG = "fusionframes"


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, its line in ``fusionframes --help``, and ``module:function`` that adds
    its options to the parser (and sets ``handler``) when the command is used."""

    name: str
    help: str
    configure: str


COMMANDS: tuple[Command, ...] = (
    Command("generate", "make a video from a prompt", "generate:configure_generate"),
    Command(
        "animate",
        "camera animation: warp a picture and let the model redraw it",
        "animation:configure_animate",
    ),
    Command(
        "movie",
        "a mini-movie: one scene per prompt, joined by cuts, crossfades or continuation",
        "animation:configure_movie",
    ),
    Command("models", "list the models this install can use", "generate:configure_models"),
    Command(
        "convert",
        "turn the released .pt files into a model folder (safetensors)",
        "generate:configure_convert",
    ),
    Command("data", "make training data", "training:configure_data"),
    Command("train", "train a stage: movq | keyframes | interpolation", "training:configure_train"),
    Command(
        "assemble",
        "join a keyframe run and an interpolation run into one model folder",
        "training:configure_assemble",
    ),
    Command(
        "add-parts",
        "add a temporal decoder and an image-to-video U-Net trained from a model folder to it",
        "training:configure_add_parts",
    ),
    Command(
        "layout-prior",
        "fit a text-to-layout prior for a model folder and write the model with it",
        "training:configure_layout_prior",
    ),
    Command("serve", "web UI and HTTP API with a persistent job queue", "serve:configure_serve"),
    Command("worker", "run queued jobs from a shared (PostgreSQL) job store", "serve:configure_worker"),
    Command("eval", "measure a model's quality", "evaluate:configure_eval"),
    Command("lora", "LoRA adapters: merge one into a model folder", "lora:configure_lora"),
)


class ParseError(UsageError):
    """argparse refused the command line (unknown option, a value of the wrong type, a missing one)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block) and reach :func:`main` as
    :class:`ParseError`, so every user error takes the same path."""

    def error(self, message: str) -> NoReturn:
        raise ParseError(f"{message} (see {self.prog} --help)")


def _configure(command: Command, parser: argparse.ArgumentParser) -> None:
    module, function = command.configure.split(":")
    getattr(importlib.import_module(f"fusionframes.cli.{module}"), function)(parser)


def _chosen(argv: Sequence[str]) -> str | None:
    """The command word of ``argv``: its first item that is not an option (top-level options take no
    values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv`` only the command it names gets its options (all of them without)."""
    parser = Parser(prog=PROG, description="Text-to-video with Kandinsky Video.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log choices (precision, devices)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = None if argv is None else _chosen(argv)
    for command in COMMANDS:
        p = sub.add_parser(
            command.name, help=command.help, description=command.help[0].upper() + command.help[1:] + "."
        )
        if argv is None or command.name == chosen:
            _configure(command, p)
    return parser


def quiet_optional_library_logs() -> None:
    """With torchao installed, transformers imports it at load time, and on a CPU-only torch that logs
    warnings about CUDA kernels it cannot load; they concern no path this tool takes."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def report(command: str | None, error: BaseException) -> int:
    """Print a user error as one line on stderr; exit status 2."""
    where = f"{PROG} {command}" if command else PROG
    print(f"{where}: error: {one_line(error)}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. User errors (:func:`fusionframes.errors.is_user_error`) print one line and
    return 2; Ctrl-C returns 130; anything else is a bug and raises with its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _chosen(argv)
    try:
        args = build_parser(argv).parse_args(argv)
    except ParseError as error:
        return report(command if command in {c.name for c in COMMANDS} else None, error)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        quiet_optional_library_logs()
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not is_user_error(error):
            raise
        return report(args.command, error)
