"""Round trips, metadata and atomicity of fusionframes.io.video."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusionframes.io import video as vio
from fusionframes.io.video import (
    metadata_path,
    read_metadata,
    read_video,
    validate_output_path,
    write_video,
)

T, H, W = 8, 48, 64
FORMATS = ["clip.mp4", "clip.gif", "clip.webp", "frames/"]
# lossy codecs get a looser bound on the mean absolute pixel error
MAX_MEAN_ERROR = {"clip.mp4": 6.0, "clip.gif": 3.0, "clip.webp": 6.0, "frames/": 0.0}


def smooth_clip(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Gradients that move over time: easy on codecs, and every frame differs from the last."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(t):
        r = (xx * 255 // max(w - 1, 1) + i * 12) % 256
        g = yy * 255 // max(h - 1, 1)
        b = np.full_like(r, 40 + i * 20)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.asarray(frames, dtype=np.uint8)


def target(folder: Path, name: str) -> str:
    """Keep the trailing slash that marks a PNG-frames folder (``Path`` would drop it)."""
    return str(folder / name) + ("/" if name.endswith("/") else "")


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("name", FORMATS)
def test_round_trip(tmp_path: Path, name: str) -> None:
    clip = smooth_clip()
    out = write_video(clip, target(tmp_path, name), fps=10)
    frames, fps = read_video(out)
    assert frames.shape == (T, H, W, 3) and frames.dtype == np.uint8
    assert fps == pytest.approx(10.0)
    err = np.abs(frames.astype(np.int16) - clip.astype(np.int16)).mean()
    assert err <= MAX_MEAN_ERROR[name]
    assert not [n for n in listing(tmp_path) if n.startswith(".")], "temp files left behind"


def test_mp4_fractional_fps_and_float_tensor_input(tmp_path: Path) -> None:
    clip = smooth_clip(t=4)
    tensor = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255.0
    out = write_video(tensor, tmp_path / "t.mp4", fps=7.5)
    frames, fps = read_video(out)
    assert frames.shape == (4, H, W, 3)
    assert fps == pytest.approx(7.5)
    assert np.abs(frames.astype(int) - clip.astype(int)).mean() < 6.0


def test_pil_list_input_and_odd_size_mp4_is_padded(tmp_path: Path) -> None:
    clip = smooth_clip(t=3, h=33, w=47)
    out = write_video([Image.fromarray(f) for f in clip], tmp_path / "odd.mp4", fps=8)
    frames, _ = read_video(out)
    assert frames.shape == (3, 34, 48, 3)  # one replicated row/column so yuv420p can encode it
    assert np.abs(frames[:, :33, :47].astype(int) - clip.astype(int)).mean() < 6.0


@pytest.mark.parametrize("name", ["clip.gif", "clip.webp"])
def test_animated_formats_keep_repeated_frames(tmp_path: Path, name: str) -> None:
    clip = smooth_clip(t=5)
    clip[2] = clip[1]  # Pillow merges identical neighbours; reading must re-expand them
    frames, fps = read_video(write_video(clip, tmp_path / name, fps=10))
    assert frames.shape[0] == 5 and fps == pytest.approx(10.0)


@pytest.mark.parametrize("name", FORMATS)
def test_metadata_round_trip_embedded_and_sidecar(tmp_path: Path, name: str) -> None:
    meta = {"prompt": "рыжий кот on a sofa", "seed": 42, "settings": {"guidance": 5.0, "steps": [1, 2]}}
    out = write_video(smooth_clip(t=3), target(tmp_path, name), fps=10, metadata=meta)
    sidecar = metadata_path(out)
    assert sidecar == tmp_path / ("frames.json" if name.endswith("/") else "clip.json")
    assert json.loads(sidecar.read_text(encoding="utf-8")) == meta
    assert read_metadata(out) == meta
    sidecar.unlink()  # the embedded copy alone must be enough
    assert read_metadata(out) == meta


def test_metadata_none_still_writes_sidecar(tmp_path: Path) -> None:
    out = write_video(smooth_clip(t=2), tmp_path / "a.gif", fps=5)
    assert json.loads((tmp_path / "a.json").read_text()) == {}
    assert read_metadata(out) == {}


def failing_frames(n_good: int, exc: BaseException) -> Iterator[np.ndarray]:
    """A frame stream that dies midway, like a sampler interrupted by Ctrl-C."""
    yield from smooth_clip(t=n_good)
    raise exc


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_write_leaves_nothing(tmp_path: Path, name: str, exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        write_video(failing_frames(3, exc), target(tmp_path, name), fps=10, metadata={"a": 1})
    assert listing(tmp_path) == set()


def test_failed_overwrite_keeps_previous_output(tmp_path: Path) -> None:
    out = write_video(smooth_clip(t=2), tmp_path / "a.mp4", fps=10, metadata={"v": 1})
    before = out.read_bytes()
    with pytest.raises(RuntimeError):
        write_video(failing_frames(2, RuntimeError("x")), out, fps=10, metadata={"v": 2})
    assert out.read_bytes() == before and read_metadata(out) == {"v": 1}
    assert listing(tmp_path) == {"a.mp4", "a.json"}


def test_failure_inside_encoder_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(vio, "_write_mp4", broken)
    with pytest.raises(OSError, match="disk full"):
        write_video(smooth_clip(t=2), tmp_path / "a.mp4", fps=10)
    assert listing(tmp_path) == set()


def test_png_folder_overwrite_replaces_old_frames(tmp_path: Path) -> None:
    folder = target(tmp_path, "f/")
    write_video(smooth_clip(t=5), folder, fps=10)
    write_video(smooth_clip(t=2), folder, fps=10)
    assert sorted(listing(tmp_path / "f")) == ["frame_00000.png", "frame_00001.png"]
    (tmp_path / "f" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already holds other files"):
        validate_output_path(folder)


@pytest.mark.parametrize("name", ["clip.xyz", "clip.MOV", "clip.avi"])
def test_bad_extension(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"output: .*is not a known format; allowed: \.mp4, \.gif, \.webp"):
        validate_output_path(tmp_path / name)
    assert listing(tmp_path) == set()


def test_folder_name_with_extension_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must not end in an extension"):
        validate_output_path(str(tmp_path / "run.v2") + "/")


def test_missing_parent_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="output: folder .*does not exist"):
        validate_output_path(tmp_path / "nope" / "clip.mp4")
    with pytest.raises(FileNotFoundError):
        write_video(smooth_clip(t=1), tmp_path / "nope" / "clip.mp4", fps=8)
    assert listing(tmp_path) == set()


def test_validate_accepts_formats_and_creates_nothing(tmp_path: Path) -> None:
    assert validate_output_path(tmp_path / "A.MP4") == tmp_path / "A.MP4"
    assert validate_output_path(str(tmp_path / "frames") + "/") == tmp_path / "frames"
    assert validate_output_path(tmp_path / "frames2") == tmp_path / "frames2"
    assert listing(tmp_path) == set()


@pytest.mark.parametrize(
    ("frames", "fps", "match"),
    [
        ([], 8, "frames: no frames"),
        (np.zeros((2, 8, 8), np.uint8), 8, "frames: expected a 4-D"),
        (np.zeros((2, 8, 8, 3), np.float32), 8, "frames: unsupported frame"),
        (np.zeros((2, 8, 8, 3), np.uint8), 0, "fps: expected a positive number"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], 8, "same size"),
    ],
)
def test_bad_frames_or_fps(tmp_path: Path, frames, fps, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_video(frames, tmp_path / "x.gif", fps=fps)
    assert listing(tmp_path) == set()


def test_metadata_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metadata: must be JSON"):
        write_video(smooth_clip(t=1), tmp_path / "x.gif", fps=8, metadata={"x": object()})


def test_read_missing_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_video(tmp_path / "none.mp4")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a readable video"):
        read_video(tmp_path / "x.txt")
