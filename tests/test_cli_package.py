"""The CLI package itself: start-up without torch, one error policy for every command, one name per option."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusionframes import cli
from fusionframes.cli import app
from fusionframes.errors import UsageError, is_user_error, one_line

SRC = str(Path(__file__).resolve().parent.parent / "src")


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["eval", "synthetic", "--help"]])
def test_help_imports_no_heavy_module(argv: list[str]) -> None:
    """Issue 29: building the parser must not import torch (2 s on this machine) or the libraries."""
    heavy = ("torch", "transformers", "diffusers", "fusionframes.camera", "fusionframes.serve", "av")
    result = run_python(
        "import sys\n"
        "from fusionframes.cli import main\n"
        f"code = main({argv!r})\n"
        f"print('LOADED', [m for m in {heavy!r} if m in sys.modules])\n"
        "sys.exit(code)"
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout
    assert "usage: fusionframes" in result.stdout


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fusionframes.cli", "generate", "x", "--steps", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "fusionframes generate: error: argument --steps: must be between 1 and 1000, got 0 "
        "(see fusionframes generate --help)"
    )
    assert "Traceback" not in result.stderr


def test_every_command_builds_and_names_the_scheduler_once() -> None:
    parser = cli.build_parser()  # every command's options (the help of each must format)
    for command in app.COMMANDS:  # each command's options alone, as main builds them
        p = app.Parser(prog=f"fusionframes {command.name}")
        app._configure(command, p)
        assert p.format_help() and (p.get_default("handler") or p._subparsers is not None)
    text = parser.format_help()
    assert all(c.name in text for c in app.COMMANDS)
    for argv in (["generate", "x"], ["movie", "a", "b"], ["eval", "synthetic"]):
        args = cli.build_parser(argv).parse_args([*argv, "--scheduler", "ddim"])
        assert args.scheduler == "ddim" and not hasattr(args, "sampler")


def test_sampler_is_a_deprecated_alias(capsys) -> None:
    argv = ["generate", "x", "--sampler", "ddim"]
    args = cli.build_parser(argv).parse_args(argv)
    assert args.scheduler == "ddim"
    assert "--sampler is deprecated; use --scheduler" in capsys.readouterr().err


def test_user_errors_are_one_line_and_exit_2(monkeypatch, capsys) -> None:
    def fail_with(error: BaseException):
        def handler(_args) -> int:
            raise error

        return handler

    raised = [
        UsageError("steps: too many"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/config.json"),
        PermissionError(errno.EACCES, "Permission denied", "/ro/out.json"),
        OSError(errno.ENOSPC, "No space left on device"),
        ValueError("first line\nsecond line"),
    ]
    for error in raised:
        monkeypatch.setattr("fusionframes.cli.generate.run_models", fail_with(error))
        assert cli.main(["models"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("fusionframes models: error: ")
    assert "No such file or directory: /x/config.json" in one_line(raised[1])
    assert one_line(raised[4]) == "first line second line"


def test_bugs_keep_their_traceback(monkeypatch) -> None:
    def broken(_args) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr("fusionframes.cli.generate.run_models", broken)
    with pytest.raises(KeyError):
        cli.main(["models"])
    assert not is_user_error(KeyError("x")) and not is_user_error(OSError(errno.EIO, "I/O error"))


def test_serve_rejects_infinite_quota_and_busy_port(tmp_path: Path, capsys) -> None:
    import socket

    assert cli.main(["serve", "--quota-mb", "inf", "--data-dir", str(tmp_path)]) == 2
    assert "--quota-mb: must be a finite number" in capsys.readouterr().err
    assert cli.main(["serve", "--quota-mb", "1e308", "--data-dir", str(tmp_path)]) == 2
    assert "--quota-mb: must be <=" in capsys.readouterr().err
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        assert cli.main(["serve", "--port", str(port), "--data-dir", str(tmp_path / "d")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"port: {port} on 127.0.0.1 is already in use" in err
    finally:
        holder.close()


def test_hyphenated_preset_names_are_aliases() -> None:
    """Issue 28.14: ``--motion zoom-in`` as users type it is ``zoom_in``."""
    from fusionframes.pipelines.animation import resolve_motion

    hyphens, label = resolve_motion("zoom-in+pan-left", 6, 24.0, 64)
    underscores, _ = resolve_motion("zoom_in+pan_left", 6, 24.0, 64)
    assert hyphens == underscores and label == "zoom_in+pan_left"
    with pytest.raises(ValueError, match="unknown preset 'spin_around'"):
        resolve_motion("spin-around", 6, 24.0, 64)


def refuse_loading(monkeypatch) -> None:
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before validation")

    monkeypatch.setattr(TextToVideoPipeline, "from_pretrained", refuse)


def test_output_without_extension_is_refused_not_a_silent_png_folder(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Issue 28.13: ``-o out/noext`` became a PNG folder without a word."""
    refuse_loading(monkeypatch)
    noext = tmp_path / "noext"
    assert cli.main(["generate", "x", "--model", str(tiny_model_dir), "-o", str(noext)]) == 2
    err = capsys.readouterr().err
    assert f"output: '{noext}' has no extension; add .mp4, .gif or .webp, or write '{noext}/'" in err
    assert not noext.exists()
    from fusionframes.cli.options import check_output_text

    assert check_output_text(f"{noext}/") == f"{noext}/"
    noext.mkdir()  # an existing folder may be named without the slash
    assert check_output_text(str(noext)) == str(noext)


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in (root ignores permission bits: /sys refuses even root)."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("option, name", [("--json", "summary.json"), ("--sheet", "sheet.png")])
def test_eval_outputs_in_a_read_only_folder_fail_before_the_evaluation(
    option: str, name: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Issue 28.8: it failed only after every video had been made."""
    refuse_loading(monkeypatch)
    target = read_only_folder(tmp_path) / name
    assert cli.main(["eval", "synthetic", "--model", str(tiny_model_dir), option, str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{option.lstrip('-')}: cannot write in {target.parent}" in err


def test_eval_binary_prompts_file_is_named(tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    refuse_loading(monkeypatch)
    for content in (b"\xff\xd8\xff\xe0 JFIF", b"a red circle\x00\x00\x01"):
        prompts = tmp_path / "prompts.bin"
        prompts.write_bytes(content)
        argv = ["eval", "synthetic", "--model", str(tiny_model_dir), "--prompts-file", str(prompts)]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"prompts-file: {prompts} is not a text file" in err
