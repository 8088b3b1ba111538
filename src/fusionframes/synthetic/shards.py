"""Writing the world as WebDataset shards: clip ``i`` of seed ``s`` is drawn from its own generator, so
the same seed gives the same bytes however the clips are split into shards.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionframes.io.atomic import atomic_write, check_writable_folder
from fusionframes.synthetic.captions import caption
from fusionframes.synthetic.mp4 import encode_mp4
from fusionframes.synthetic.render import check_clip_args, ground_truth, render_clip
from fusionframes.synthetic.scenes import (
    check_new_colour_share,
    check_new_shape_share,
    check_path_jitter,
    sample_scene,
)
from fusionframes.synthetic.world import BACKGROUNDS, HELD_OUT, NEW_COLOURS, NEW_SHAPES, PALETTE


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of clip ``index``: independent of how many clips came before or per shard."""
    return np.random.default_rng([seed, index])


def make_sample(
    seed: int,
    index: int,
    size: int = 128,
    frames: int = 16,
    path_jitter: float | None = None,
    new_colour_share: float = 0.0,
    new_shape_share: float = 0.0,
) -> tuple[np.ndarray, str, dict]:
    """(frames, caption, ground truth) of training clip ``index`` (never a held-out triple)."""
    rng = clip_rng(seed, index)
    scene = sample_scene(
        rng, path_jitter=path_jitter, new_colour_share=new_colour_share, new_shape_share=new_shape_share
    )
    text = caption(scene, rng)
    truth = ground_truth(scene, size, frames)
    truth["caption"] = text
    return render_clip(scene, size, frames), text, truth


def _check_positive(name: str, value: object, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class ShardClips:
    """The clips of one shard, and how they are drawn and encoded."""

    seed: int
    indices: range
    size: int
    frames: int
    fps: int
    path_jitter: float | None
    new_colour_share: float = 0.0
    new_shape_share: float = 0.0

    def write_tar(self, tmp: Path) -> None:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for index in self.indices:
                clip, text, truth = make_sample(
                    self.seed,
                    index,
                    self.size,
                    self.frames,
                    self.path_jitter,
                    self.new_colour_share,
                    self.new_shape_share,
                )
                for ext, data in (
                    ("mp4", encode_mp4(clip, self.fps)),
                    ("txt", text.encode()),
                    ("json", json.dumps(truth, sort_keys=True).encode()),
                ):
                    info = tarfile.TarInfo(f"{index:08d}.{ext}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tar.addfile(info, io.BytesIO(data))


def write_shards(
    out_dir: str | Path,
    videos: int,
    size: int = 128,
    frames: int = 16,
    seed: int = 0,
    shard_size: int = 1000,
    fps: int = 8,
    path_jitter: float | None = None,
    new_colour_share: float = 0.0,
    new_shape_share: float = 0.0,
) -> list[Path]:
    """Write ``videos`` clips as WebDataset tars ``shard-000000.tar``... plus ``manifest.json``.

    Each sample ``%08d`` holds ``mp4`` (H.264), ``txt`` (caption) and ``json`` (ground truth). Files are
    written to a temp name and renamed, so a crash never leaves a half shard, and a failure before the
    first shard removes a folder this call made. The same seed gives the same captions, JSON and rendered
    frames (the MP4 bytes of a few clips can differ between processes: libx264's output for them depends on
    memory it reads uninitialised, by at most one level in a few pixels once decoded).
    """
    _check_positive("videos", videos)
    check_clip_args(size, frames)
    _check_positive("shard_size", shard_size)
    _check_positive("fps", fps)
    _check_positive("seed", seed, 0)
    check_path_jitter(path_jitter)
    check_new_colour_share(new_colour_share)
    check_new_shape_share(new_shape_share)
    out = Path(out_dir)
    check_writable_folder(out, "out")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    shards: list[Path] = []
    try:
        for number, first in enumerate(range(0, videos, shard_size)):
            path = out / f"shard-{number:06d}.tar"
            indices = range(first, min(videos, first + shard_size))
            atomic_write(
                path,
                ShardClips(
                    seed, indices, size, frames, fps, path_jitter, new_colour_share, new_shape_share
                ).write_tar,
            )
            shards.append(path)
    except BaseException:
        if created and not shards:
            shutil.rmtree(out, ignore_errors=True)
        raise
    manifest = {
        "videos": videos,
        "size": size,
        "frames": frames,
        "fps": fps,
        "seed": seed,
        "shard_size": shard_size,
        "path_jitter": path_jitter,
        "shards": [p.name for p in shards],
        "held_out": [list(h) for h in HELD_OUT],
        "palette": {k: list(v) for k, v in PALETTE.items()},
        **(
            {
                "new_colour_share": new_colour_share,
                "new_colours": {k: list(v) for k, v in NEW_COLOURS.items()},
            }
            if new_colour_share
            else {}
        ),
        **({"new_shape_share": new_shape_share, "new_shapes": list(NEW_SHAPES)} if new_shape_share else {}),
        "backgrounds": {k: list(v) for k, v in BACKGROUNDS.items()},
    }
    text = json.dumps(manifest, indent=2, sort_keys=True)
    atomic_write(out / "manifest.json", lambda tmp: tmp.write_text(text))
    return shards
