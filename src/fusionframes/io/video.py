"""Writing and reading videos: MP4 (H.264), animated GIF and WebP, and folders of PNG frames.

Outputs are written atomically (temp file in the same folder, then ``os.replace``) so an interrupted or
failed generation never leaves a half-written file behind, and the generation settings travel with the
video: inside the file where the format has room for them, and always in a ``<name>.json`` beside it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageSequence
from PIL.PngImagePlugin import PngInfo

from fusionframes.io.atomic import temp_sibling

logger = logging.getLogger(__name__)

PNG_FRAMES = ""
"""Format key for a folder of PNG frames (an output path ending in ``/``, or with no extension)."""

SUPPORTED_FORMATS: frozenset[str] = frozenset({".mp4", ".gif", ".webp", PNG_FRAMES})
"""Output formats ``write_video`` can produce, keyed by file extension ("" = folder of PNG frames)."""

READABLE_VIDEO_EXTS: frozenset[str] = frozenset({".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".gif"})
"""Container formats ``read_video`` decodes with PyAV (WebP and PNG folders are read with Pillow)."""

ALLOWED_FORMATS_TEXT = ".mp4, .gif, .webp, or a folder path ending in / for PNG frames"
METADATA_KEY = "fusionframes"  # PNG text-chunk keyword holding the JSON metadata
FPS_KEY = "fusionframes-fps"  # PNG text-chunk keyword holding the frame rate
EXIF_IMAGE_DESCRIPTION = 0x010E  # WebP: JSON metadata stored as EXIF ImageDescription (ASCII)
DEFAULT_FPS = 24.0  # returned for PNG folders that carry no frame rate
MP4_CRF = 18  # visually near-lossless H.264; generated clips are short so size matters little
MP4_PRESET = "medium"
WEBP_QUALITY = 90
FRAME_NAME = "frame_{:05d}.png"
_FRAME_RE = re.compile(r"frame_\d+\.png")

FrameInput = Any  # list of PIL images / arrays, a [T,H,W,3] uint8 array, or a [T,3,H,W] float array/tensor


# --------------------------------------------------------------------------------------------- paths


def output_format(path: str | os.PathLike[str]) -> str:
    """The format key of an output path: ".mp4", ".gif", ".webp", or "" (folder of PNG frames).

    A path ending in ``/`` or without an extension is a folder; other extensions are returned as they
    are (lower-cased), so callers can reject the ones not in ``SUPPORTED_FORMATS``.
    """
    raw = os.fspath(path)
    if raw.endswith(("/", os.sep)):
        return PNG_FRAMES
    return Path(raw).suffix.lower()


def metadata_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar JSON beside a video: ``clip.mp4`` -> ``clip.json``, ``frames/`` -> ``frames.json``."""
    p = Path(os.fspath(path).rstrip("/" + os.sep) or ".").expanduser()
    return p.with_name((p.stem if p.suffix.lower() in SUPPORTED_FORMATS else p.name) + ".json")


def validate_output_path(path: str | os.PathLike[str]) -> Path:
    """Check an output path before any model loads, so a typo fails in milliseconds, not after sampling.

    Cheap and side-effect free: nothing is created. Returns the path as a ``Path`` (``~`` expanded).
    """
    raw = os.fspath(path)
    if not raw.strip():
        raise ValueError(f"output: path is empty; allowed: {ALLOWED_FORMATS_TEXT}")
    p = Path(raw).expanduser()
    fmt = output_format(raw)
    if fmt == PNG_FRAMES and p.suffix:  # once the trailing "/" is dropped (Path) it would read as a file
        raise ValueError(
            f"output: folder name '{p.name}' must not end in an extension like '{p.suffix}'; "
            f"allowed: {ALLOWED_FORMATS_TEXT}"
        )
    if fmt not in SUPPORTED_FORMATS:
        raise ValueError(
            f"output: extension '{p.suffix}' is not a known format; allowed: {ALLOWED_FORMATS_TEXT}"
        )
    parent = p.parent
    if not parent.exists():
        raise FileNotFoundError(f"output: folder '{parent}' does not exist; create it first")
    if not parent.is_dir():
        raise ValueError(f"output: '{parent}' is not a folder")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"output: folder '{parent}' is not writable")
    if fmt == PNG_FRAMES:
        _check_frames_folder_replaceable(p)
    elif p.is_dir():
        raise ValueError(f"output: '{p}' is an existing folder; give a file path ending in {fmt}")
    return p


def _check_frames_folder_replaceable(p: Path) -> None:
    """Only replace folders we could have written ourselves; never wipe a folder with other files."""
    if p.exists() and not p.is_dir():
        raise ValueError(f"output: '{p}' is an existing file, not a folder for PNG frames")
    if p.is_dir():
        foreign = [c.name for c in p.iterdir() if not _FRAME_RE.fullmatch(c.name)]
        if foreign:
            raise ValueError(
                f"output: folder '{p}' already holds other files (e.g. '{foreign[0]}'); "
                "give an empty or new folder for PNG frames"
            )


# -------------------------------------------------------------------------------------------- frames


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch here
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _frame_to_uint8(frame: Any) -> np.ndarray:
    """One frame -> [H, W, 3] uint8. Accepts PIL, uint8 [H,W,3], or float [3,H,W] in [0, 1]."""
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    arr = _to_numpy(frame)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 3:
        return arr
    if np.issubdtype(arr.dtype, np.floating) and arr.ndim == 3 and arr.shape[0] == 3:
        return (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    raise ValueError(
        f"frames: unsupported frame of dtype {arr.dtype} and shape {tuple(arr.shape)}; allowed: "
        "PIL images, uint8 [H,W,3], or float [3,H,W] in [0,1]"
    )


def iter_frames(frames: FrameInput) -> Iterator[np.ndarray]:
    """Yield [H, W, 3] uint8 frames, lazily, from any accepted frame input.

    Accepted: a list/iterable of PIL images, of uint8 [H,W,3] arrays or of float [3,H,W] arrays/tensors
    in [0, 1]; a uint8 array [T,H,W,3]; a float array or tensor [T,3,H,W] in [0, 1].
    """
    if isinstance(frames, Image.Image):
        raise ValueError("frames: got a single image; pass a list of frames")
    if hasattr(frames, "ndim") and hasattr(frames, "shape"):
        if frames.ndim != 4:
            raise ValueError(
                f"frames: expected a 4-D array [T,H,W,3] uint8 or [T,3,H,W] float, got shape "
                f"{tuple(frames.shape)}"
            )
        for i in range(frames.shape[0]):
            yield _frame_to_uint8(frames[i])
        return
    if not isinstance(frames, Iterable):
        raise ValueError(f"frames: expected a list of frames or an array, got {type(frames).__name__}")
    for frame in frames:
        yield _frame_to_uint8(frame)


def _checked_frames(frames: FrameInput) -> Iterator[np.ndarray]:
    """Frames with a consistent size; raises on an empty input or a size change mid-video."""
    size = None
    for arr in iter_frames(frames):
        if size is None:
            size = arr.shape[:2]
        elif arr.shape[:2] != size:
            raise ValueError(f"frames: all frames must be the same size; got {size} then {arr.shape[:2]}")
        yield arr
    if size is None:
        raise ValueError("frames: no frames given; need at least one")


# ------------------------------------------------------------------------------------------- writing


def _validate_fps(fps: float) -> float:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps: expected a positive number, got {fps!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"fps: expected a positive number, got {fps!r}")
    return value


def _metadata_json(metadata: dict | None, ensure_ascii: bool = False) -> str:
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata: expected a dict, got {type(metadata).__name__}")
    try:
        return json.dumps(metadata, ensure_ascii=ensure_ascii, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata: must be JSON-serialisable ({exc})") from None


def _temp_sibling(target: Path, suffix: str) -> Path:
    """A hidden temp path in the target's folder, so the final ``os.replace`` stays on one filesystem; the
    temporaries a killed run left for ``target`` are removed first (see :mod:`fusionframes.io.atomic`)."""
    return temp_sibling(target, suffix)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError as exc:  # cleanup must not mask the original error
        logger.warning("could not remove temporary %s: %s", path, exc)


def _even_pad(arr: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: replicate the last row/column instead of scaling or cropping."""
    h, w = arr.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return arr
    return np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _write_mp4(frames: Iterator[np.ndarray], tmp: Path, fps: float, meta_json: str) -> None:
    import av

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        container.metadata["comment"] = meta_json
        stream = None
        for arr in frames:
            arr = _even_pad(arr)
            if stream is None:
                stream = container.add_stream("libx264", rate=rate)
                stream.height, stream.width = arr.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(MP4_CRF), "preset": MP4_PRESET}
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            container.mux(stream.encode(frame))
        if stream is not None:
            container.mux(stream.encode(None))


def _write_animated(frames: Iterator[np.ndarray], tmp: Path, fps: float, fmt: str, meta_json: str) -> None:
    """GIF/WebP through Pillow; both formats merge identical neighbours, ``read_video`` re-expands them."""
    images = [Image.fromarray(arr) for arr in frames]
    duration = max(1, round(1000.0 / fps))
    opts: dict[str, Any] = {"save_all": True, "append_images": images[1:], "duration": duration, "loop": 0}
    if fmt == ".gif":
        opts.update(format="GIF", comment=meta_json.encode("utf-8"))
    else:
        exif = Image.Exif()
        exif[EXIF_IMAGE_DESCRIPTION] = json.dumps(json.loads(meta_json), ensure_ascii=True, sort_keys=True)
        opts.update(format="WEBP", quality=WEBP_QUALITY, method=4, exif=exif)
    images[0].save(tmp, **opts)


def _write_png_folder(frames: Iterator[np.ndarray], tmp: Path, fps: float, meta_json: str) -> None:
    tmp.mkdir()
    for i, arr in enumerate(frames):
        info = PngInfo()
        info.add_text(FPS_KEY, repr(fps))
        if i == 0:
            info.add_itxt(METADATA_KEY, meta_json)
        Image.fromarray(arr).save(tmp / FRAME_NAME.format(i), format="PNG", pnginfo=info)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _replace_folder(tmp: Path, target: Path) -> None:
    """``os.replace`` cannot overwrite a non-empty folder: move the old one aside, swap, then delete it."""
    old = None
    if target.exists():
        old = _temp_sibling(target, ".old")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        _remove(old)


def write_video(
    frames: FrameInput, path: str | os.PathLike[str], fps: float, metadata: dict | None = None
) -> Path:
    """Write frames as MP4 (H.264), GIF, WebP or a PNG-frame folder, chosen by the path's extension.

    ``frames``: a list/iterable of PIL images (or uint8 [H,W,3] arrays), a uint8 numpy array [T,H,W,3],
    or a float array/tensor [T,3,H,W] with values in [0, 1] (clipped). Iterables are consumed lazily
    (MP4/PNG stream frame by frame). MP4 frames of odd height/width are padded by one replicated
    row/column (yuv420p needs even sizes). GIF keeps 10 ms timing, so its fps is approximate.

    ``metadata`` (any JSON-able dict: prompt, seed, settings) is embedded where the format allows
    (MP4 ``comment`` tag, GIF comment, WebP EXIF ImageDescription, first PNG's iTXt chunk) and always
    written beside the output as ``<name>.json``. Both files appear atomically or not at all.
    Returns the output path.
    """
    target = validate_output_path(path)
    fps = _validate_fps(fps)
    meta_json = _metadata_json(metadata)
    fmt = output_format(path)
    tmp = _temp_sibling(target, fmt)
    sidecar = metadata_path(target)
    tmp_sidecar = _temp_sibling(sidecar, ".json")
    checked = _checked_frames(frames)
    try:
        if fmt == ".mp4":
            _write_mp4(checked, tmp, fps, meta_json)
        elif fmt in (".gif", ".webp"):
            _write_animated(checked, tmp, fps, fmt, meta_json)
        else:
            _write_png_folder(checked, tmp, fps, meta_json)
        _write_text(tmp_sidecar, json.dumps(json.loads(meta_json), ensure_ascii=False, indent=2) + "\n")
        if fmt == PNG_FRAMES:
            _replace_folder(tmp, target)
        else:
            os.replace(tmp, target)
        os.replace(tmp_sidecar, sidecar)
    except BaseException:
        _remove(tmp)
        _remove(tmp_sidecar)
        raise
    return target


# ------------------------------------------------------------------------------------------- reading


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"path: video '{path}' does not exist")


def _read_with_av(path: Path) -> tuple[np.ndarray, float]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"path: '{path}' holds no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if not frames:
        raise ValueError(f"path: '{path}' holds no decodable video frames")
    return np.stack(frames), float(rate) if rate else DEFAULT_FPS


def _read_animated(path: Path) -> tuple[np.ndarray, float]:
    """Pillow merges identical consecutive frames on save; repeat them by duration to undo that."""
    frames, durations = [], []
    with Image.open(path) as im:
        for frame in ImageSequence.Iterator(im):
            frame.load()
            durations.append(int(frame.info.get("duration") or 0))
            frames.append(np.asarray(frame.convert("RGB")))
    if not frames:
        raise ValueError(f"path: '{path}' holds no frames")
    positive = [d for d in durations if d > 0]
    if not positive:
        return np.stack(frames), DEFAULT_FPS
    base = min(positive)
    repeats = [max(1, round(d / base)) if d > 0 else 1 for d in durations]
    expanded = [f for f, r in zip(frames, repeats, strict=True) for _ in range(r)]
    return np.stack(expanded), 1000.0 / base


def _png_frames(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise ValueError(f"path: folder '{path}' holds no .png frames")
    return files


def _read_png_folder(path: Path) -> tuple[np.ndarray, float]:
    files = _png_frames(path)
    frames = []
    fps = None
    for f in files:
        with Image.open(f) as im:
            if fps is None and FPS_KEY in im.info:
                fps = float(im.info[FPS_KEY])
            frames.append(np.asarray(im.convert("RGB")))
    if fps is None:
        fps = float(_read_sidecar(path).get("fps", DEFAULT_FPS))
    return np.stack(frames), fps


def read_video(path: str | os.PathLike[str]) -> tuple[np.ndarray, float]:
    """Decode a whole video into ``([T, H, W, 3] uint8, fps)``.

    Handles everything ``write_video`` writes (MP4, GIF, WebP, PNG folder) plus common containers
    (webm, mkv, mov, avi). Loads every frame: meant for short generated clips and tests.
    """
    p = Path(path).expanduser()
    _require_exists(p)
    if p.is_dir():
        return _read_png_folder(p)
    ext = p.suffix.lower()
    if ext in (".gif", ".webp"):
        return _read_animated(p)
    if ext in READABLE_VIDEO_EXTS:
        return _read_with_av(p)
    raise ValueError(
        f"path: extension '{p.suffix}' is not a readable video; allowed: "
        f"{', '.join(sorted(READABLE_VIDEO_EXTS | {'.webp'}))}, or a folder of PNG frames"
    )


def _read_sidecar(path: Path) -> dict:
    sidecar = metadata_path(path)
    if not sidecar.is_file():
        return {}
    with open(sidecar, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def _embedded_metadata(path: Path) -> str | bytes | None:
    ext = path.suffix.lower()
    if path.is_dir():
        files = sorted(path.glob("frame_*.png")) or _png_frames(path)
        with Image.open(files[0]) as im:
            return im.info.get(METADATA_KEY)
    if ext == ".gif":
        with Image.open(path) as im:
            return im.info.get("comment")
    if ext == ".webp":
        with Image.open(path) as im:
            return im.getexif().get(EXIF_IMAGE_DESCRIPTION)
    if ext in READABLE_VIDEO_EXTS:
        import av

        with av.open(str(path)) as container:
            return container.metadata.get("comment")
    return None


def _parse_json_dict(raw: str | bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValueError):
        return None  # a comment some other tool wrote, not ours
    return data if isinstance(data, dict) else None


def read_metadata(path: str | os.PathLike[str]) -> dict:
    """The metadata dict stored with a video: embedded copy first, else the ``<name>.json`` sidecar.

    Returns ``{}`` when there is none. Raises FileNotFoundError if neither video nor sidecar exists.
    """
    p = Path(path).expanduser()
    if not p.exists():
        if metadata_path(p).is_file():
            return _read_sidecar(p)
        raise FileNotFoundError(f"path: video '{p}' does not exist")
    try:
        embedded = _parse_json_dict(_embedded_metadata(p))
    except Exception as exc:  # a damaged file may still have a readable sidecar
        logger.debug("no embedded metadata in %s: %s", p, exc)
        embedded = None
    return embedded if embedded is not None else _read_sidecar(p)
