"""``fusionframes generate`` with a Kandinsky Video 1.1 model (--image, --motion) and without one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_pipeline_kv11 import make_release_folder

from fusionframes.cli import main


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_release_folder(tmp_path_factory.mktemp("cli11") / "kv11")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image", "first.png"], "--image: only Kandinsky Video 1.1 models"),
        (["--motion", "high"], "--motion: only Kandinsky Video 1.1 models"),
    ],
)
def test_options_of_11_refused_for_other_models(tiny_model_dir: Path, argv, message, capsys) -> None:
    code = main(["generate", "a red circle", "--model", str(tiny_model_dir), *argv])
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--motion", "fast"], "motion: unknown 'fast'"),
        (["--motion", "-3"], "motion"),
        (["--image", "/nonexistent.png"], "image: cannot read"),
        (["--width", "60"], "width: 60"),
        (["--decoder", "gif"], "decoder"),
        (["--scheduler", "unipc"], "--scheduler"),
        (["--image-guidance", "nan"], "--image-guidance"),
    ],
)
def test_bad_values_fail_in_one_line(release: Path, tmp_path: Path, argv, message, capsys) -> None:
    code = main(["generate", "a cat", "--model", str(release), "-o", str(tmp_path / "v.gif"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_image_to_video_from_the_command_line(release: Path, tmp_path: Path, capsys) -> None:
    first = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(first)
    out = tmp_path / "video.gif"
    argv = ["generate", "a panda climbs up a tree", "--model", str(release), "--image", str(first)]
    argv += ["--motion", "high", "--steps", "1", "--width", "64", "--height", "64", "--fps", "low"]
    argv += ["--seed", "3", "--dtype", "float32", "--device", "cpu", "-o", str(out)]
    assert main(argv) == 0
    assert "motion 50" in capsys.readouterr().out
    with Image.open(out) as video:
        assert video.n_frames == 12 and video.size == (64, 64)
