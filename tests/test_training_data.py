"""Captioned-video datasets: WebDataset shards and folder + captions, and the skipping of bad samples."""

from __future__ import annotations

import csv
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fusionframes.io.video import write_video
from fusionframes.training import data as td
from fusionframes.training.data import (
    BucketBatches,
    FolderVideos,
    SkipCounter,
    WebDatasetVideos,
    assign_shards,
    bucket_batches,
    collate_videos,
    make_dataset,
)

FRAMES, H, W = 16, 48, 64


def make_clip(frames: int = FRAMES, h: int = H, w: int = W) -> np.ndarray:
    """Red = 16 * frame index (shows which frames were taken); green only in the middle half of the width."""
    clip = np.zeros((frames, h, w, 3), np.uint8)
    for i in range(frames):
        clip[i, :, :, 0] = 16 * i
    clip[:, :, w // 4 : 3 * w // 4, 1] = 255
    return clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Encoded tiny videos, made once for the module."""
    folder = tmp_path_factory.mktemp("clips")
    out = {
        "good.mp4": write_video(make_clip(), folder / "good.mp4", fps=8),
        "good.gif": write_video(make_clip(), folder / "good.gif", fps=10),
        "short.mp4": write_video(make_clip(frames=4), folder / "short.mp4", fps=8),
        "portrait.mp4": write_video(make_clip(h=W, w=H), folder / "portrait.mp4", fps=8),
    }
    result = {name: path.read_bytes() for name, path in out.items()}
    result["corrupt.mp4"] = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 4
    result["empty.mp4"] = b""
    return result


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def messy_shard_members(clips: dict[str, bytes], prefix: str = "") -> dict[str, bytes]:
    """Three good samples and one of each kind of bad sample."""
    return {
        f"{prefix}s0.mp4": clips["good.mp4"],
        f"{prefix}s0.txt": b"a red square",
        f"{prefix}s1.mp4": clips["good.mp4"],
        f"{prefix}s1.json": json.dumps({"caption": "from json", "source": "test"}).encode(),
        f"{prefix}s2.mp4": clips["corrupt.mp4"],
        f"{prefix}s2.txt": b"corrupt",
        f"{prefix}s3.mp4": clips["empty.mp4"],
        f"{prefix}s3.txt": b"empty",
        f"{prefix}s4.mp4": clips["good.mp4"],
        f"{prefix}s5.mp4": clips["short.mp4"],
        f"{prefix}s5.txt": b"too short",
        f"{prefix}s6.gif": clips["good.gif"],
        f"{prefix}s6.txt": b"a gif",
        f"{prefix}s7.txt": b"no video at all",
    }


EXPECTED_SKIPS = {"corrupt": 1, "empty": 1, "missing_caption": 1, "too_short": 1, "missing_video": 1}


def check_item(item: dict, frames: int, size: tuple[int, int]) -> None:
    video = item["video"]
    assert video.dtype == torch.float32 and video.shape == (frames, 3, *size)
    assert video.min() >= -1.0 and video.max() <= 1.0
    assert isinstance(item["caption"], str) and item["caption"]
    assert isinstance(item["meta"], dict)


def red_levels(video: torch.Tensor) -> np.ndarray:
    """Mean red value (0..255) of each frame."""
    return ((video[:, 0].mean(dim=(1, 2)) + 1) * 127.5).numpy()


def test_webdataset_reads_good_and_skips_bad(tmp_path: Path, clips: dict[str, bytes]) -> None:
    write_tar(tmp_path / "shard-000.tar", messy_shard_members(clips))
    ds = WebDatasetVideos(tmp_path, num_frames=8, size=(H, W // 2), frame_stride=2, random_start=False)
    items = list(ds)
    assert sorted(i["caption"] for i in items) == ["a gif", "a red square", "from json"]
    for item in items:
        check_item(item, 8, (H, W // 2))
        # frames 0, 2, 4, ... were taken: red steps by 32
        np.testing.assert_allclose(red_levels(item["video"]), 32 * np.arange(8), atol=6)
        # centre crop of the middle half: all green
        assert item["video"][:, 1].min() > 0.9
    by_caption = {i["caption"]: i["meta"] for i in items}
    assert by_caption["from json"]["source"] == "test" and by_caption["from json"]["key"] == "s1"
    assert by_caption["a red square"]["frame_indices"] == list(range(0, 16, 2))
    assert dict(ds.skipped) == EXPECTED_SKIPS
    assert "skipped 5 samples" in ds.skipped.summary()


def test_sample_fps_and_random_start(tmp_path: Path, clips: dict[str, bytes]) -> None:
    write_tar(tmp_path / "a.tar", {"k.mp4": clips["good.mp4"], "k.txt": b"x"})
    ds = WebDatasetVideos(tmp_path / "a.tar", num_frames=4, size=32, sample_fps=4.0, seed=3)
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        (item,) = list(ds)
        indices = item["meta"]["frame_indices"]
        assert np.diff(indices).tolist() == [2, 2, 2]  # 8 fps source sampled at 4 fps
        assert item["meta"]["fps"] == pytest.approx(4.0)
        starts.add(indices[0])
        check_item(item, 4, (32, 32))
    assert len(starts) > 1


def test_resize_shorter_side_then_centre_crop(tmp_path: Path, clips: dict[str, bytes]) -> None:
    write_tar(tmp_path / "a.tar", {"k.mp4": clips["good.mp4"], "k.txt": b"x"})
    (item,) = list(WebDatasetVideos(tmp_path, num_frames=2, size=24, random_start=False))
    # 48x64 -> 24x32 -> centre 24x24 = original columns 8..56: green only in the middle 16 of 24 columns
    green = ((item["video"][0, 1].mean(dim=0) + 1) * 127.5).numpy()
    assert green[:3].max() < 60 and green[-3:].max() < 60 and green[6:18].min() > 200


def test_aspect_buckets_and_bucket_batches(tmp_path: Path, clips: dict[str, bytes]) -> None:
    members = {}
    for i in range(3):
        members |= {f"l{i}.mp4": clips["good.mp4"], f"l{i}.txt": b"landscape"}
        members |= {f"p{i}.mp4": clips["portrait.mp4"], f"p{i}.txt": b"portrait"}
    write_tar(tmp_path / "a.tar", members)
    buckets = [(32, 32), (24, 40), (40, 24)]
    ds = WebDatasetVideos(tmp_path, num_frames=2, buckets=buckets, shuffle=False)
    sizes = {i["caption"]: tuple(i["video"].shape[-2:]) for i in ds}
    assert sizes == {"landscape": (24, 40), "portrait": (40, 24)}
    batches = list(bucket_batches(ds, batch_size=2))
    assert [b["video"].shape[0] for b in batches] == [2, 2, 1, 1]
    for batch in batches:
        assert len(set(batch["caption"])) == 1  # one bucket per batch
    loader = torch.utils.data.DataLoader(BucketBatches(ds, 3), batch_size=None)
    assert sorted(tuple(b["video"].shape) for b in loader) == [(3, 2, 3, 24, 40), (3, 2, 3, 40, 24)]
    with pytest.raises(ValueError, match="different shapes"):
        collate_videos([{"video": torch.zeros(2, 3, 4, 4)}, {"video": torch.zeros(2, 3, 4, 5)}])


def test_assign_shards_covers_every_sample_once() -> None:
    shards = [f"s{i}" for i in range(5)]
    for world, workers in [(1, 1), (2, 2), (2, 3), (4, 2), (8, 1)]:
        seen = []
        for rank in range(world):
            for worker in range(workers):
                mine, mod, rem = assign_shards(shards, rank, world, worker, workers)
                seen += [(s, i) for s in mine for i in range(6) if i % mod == rem]
        assert sorted(seen) == sorted((s, i) for s in shards for i in range(6)), (world, workers)


def test_split_by_rank_and_workers(tmp_path: Path, clips: dict[str, bytes], monkeypatch) -> None:
    for n in range(2):
        members = {}
        for i in range(3):  # a sample's members must be adjacent in the tar
            members |= {f"k{n}{i}.mp4": clips["short.mp4"], f"k{n}{i}.txt": f"clip {n}{i}".encode()}
        write_tar(tmp_path / f"shard-{n}.tar", members)
    kwargs = {"num_frames": 2, "size": 16, "shuffle": False}
    ds = WebDatasetVideos(str(tmp_path / "shard-{0..1}.tar"), **kwargs)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    captions = sorted(item["caption"] for item in loader)
    assert captions == sorted(f"clip {n}{i}" for n in range(2) for i in range(3))
    per_rank = []
    for rank in range(2):
        monkeypatch.setattr(td.shards, "_dist_rank_world", lambda rank=rank: (rank, 2))
        per_rank.append({item["caption"] for item in WebDatasetVideos(tmp_path, **kwargs)})
    assert per_rank[0].isdisjoint(per_rank[1]) and len(per_rank[0] | per_rank[1]) == 6


def test_skips_from_workers_add_up_in_parent(tmp_path: Path, clips: dict[str, bytes]) -> None:
    write_tar(tmp_path / "a.tar", messy_shard_members(clips, "a"))
    write_tar(tmp_path / "b.tar", messy_shard_members(clips, "b"))
    ds = WebDatasetVideos(tmp_path, num_frames=8, size=16, frame_stride=2)
    items = list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2))
    assert len(items) == 6
    assert dict(ds.skipped) == {k: 2 * v for k, v in EXPECTED_SKIPS.items()}


def test_truncated_shard_is_skipped(tmp_path: Path, clips: dict[str, bytes]) -> None:
    good = write_tar(tmp_path / "a.tar", {"k.mp4": clips["good.mp4"], "k.txt": b"ok"})
    (tmp_path / "b.tar").write_bytes(good.read_bytes()[:700])
    ds = WebDatasetVideos(tmp_path, num_frames=2, size=16)
    assert [i["caption"] for i in ds] == ["ok"]
    assert dict(ds.skipped) == {"bad_shard": 1}


def make_video_folder(root: Path, clips: dict[str, bytes]) -> None:
    """A WebVid-style folder: videos named by id, some under page_dir."""
    (root / "000").mkdir(parents=True)
    (root / "1.mp4").write_bytes(clips["good.mp4"])
    (root / "000" / "2.mp4").write_bytes(clips["portrait.mp4"])
    (root / "3.mp4").write_bytes(clips["corrupt.mp4"])
    (root / "4.mp4").write_bytes(b"")
    (root / "5.mp4").write_bytes(clips["short.mp4"])
    (root / "6.mp4").write_bytes(clips["good.mp4"])


WEBVID_ROWS = [
    {"videoid": "1", "name": "one", "page_dir": ""},
    {"videoid": "2", "name": "two", "page_dir": "000"},
    {"videoid": "3", "name": "corrupt", "page_dir": ""},
    {"videoid": "4", "name": "empty", "page_dir": ""},
    {"videoid": "5", "name": "short", "page_dir": ""},
    {"videoid": "6", "name": "", "page_dir": ""},
    {"videoid": "7", "name": "missing file", "page_dir": ""},
]


def test_folder_webvid_csv(tmp_path: Path, clips: dict[str, bytes]) -> None:
    make_video_folder(tmp_path, clips)
    with open(tmp_path / "results_2M_val.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["videoid", "name", "page_dir"])
        writer.writeheader()
        writer.writerows(WEBVID_ROWS)
    ds = FolderVideos(tmp_path, num_frames=8, size=(H, W // 2), frame_stride=2, random_start=False)
    assert len(ds) == 4  # empty, no-caption and missing-file rows dropped at construction
    assert dict(ds.skipped) == {"empty": 1, "missing_caption": 1, "missing_file": 1}
    items = [ds[i] for i in range(len(ds))]
    for item in items:
        check_item(item, 8, (H, W // 2))
    # the corrupt (index 2) and short (index 3) videos are replaced by the next loadable index
    assert [i["caption"] for i in items] == ["one", "two", "one", "one"]
    assert dict(ds.skipped) == {
        "empty": 1,
        "missing_caption": 1,
        "missing_file": 1,
        "corrupt": 1,
        "too_short": 1,
    }
    np.testing.assert_allclose(red_levels(items[0]["video"]), 32 * np.arange(8), atol=6)
    assert items[1]["meta"]["page_dir"] == "000"


def test_folder_jsonl_with_dataloader(tmp_path: Path, clips: dict[str, bytes]) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(clips["good.mp4"])
    (tmp_path / "v" / "b.gif").write_bytes(clips["good.gif"])
    lines = [{"path": "v/a.mp4", "caption": "mp4 clip"}, {"path": "v/b.gif", "caption": "gif clip"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ds = make_dataset(tmp_path, num_frames=4, size=16)
    assert isinstance(ds, FolderVideos)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_videos)))
    assert batch["video"].shape == (2, 4, 3, 16, 16) and sorted(batch["caption"]) == ["gif clip", "mp4 clip"]


def test_make_dataset_picks_type_and_errors(tmp_path: Path, clips: dict[str, bytes]) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar(shards / "0.tar", {"k.mp4": clips["good.mp4"], "k.txt": b"x"})
    assert isinstance(make_dataset(shards, 4, 16), WebDatasetVideos)
    assert isinstance(make_dataset(shards / "0.tar", 4, 16), WebDatasetVideos)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="data: folder .* is empty"):
        make_dataset(empty, 4, 16)
    (empty / "x.mp4").write_bytes(clips["good.mp4"])
    with pytest.raises(ValueError, match="neither \\*.tar WebDataset shards nor a captions"):
        make_dataset(empty, 4, 16)
    with pytest.raises(FileNotFoundError, match="data: .* does not exist"):
        make_dataset(tmp_path / "nope", 4, 16)


def test_construction_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="root: video folder"):
        FolderVideos(tmp_path / "nope", num_frames=4, size=16)
    with pytest.raises(ValueError, match="captions_file: no .csv or .jsonl"):
        FolderVideos(tmp_path, num_frames=4, size=16)
    with pytest.raises(ValueError, match="urls_or_dir: folder .* holds no \\*.tar"):
        WebDatasetVideos(tmp_path, num_frames=4, size=16)
    with pytest.raises(FileNotFoundError, match="urls_or_dir"):
        WebDatasetVideos(tmp_path / "x.tar", num_frames=4, size=16)
    (tmp_path / "c.csv").write_text("clip,caption\na.mp4,hello\n")
    with pytest.raises(ValueError, match="no video column; allowed: video, path"):
        FolderVideos(tmp_path, num_frames=4, size=16)
    (tmp_path / "c.csv").write_text("video,caption\nmissing.mp4,hello\n")
    with pytest.raises(ValueError, match="none of the 1 rows"):
        FolderVideos(tmp_path, num_frames=4, size=16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_frames": 0, "size": 16}, "num_frames: expected a positive int"),
        ({"num_frames": 4, "size": (16,)}, "size: expected a positive int"),
        ({"num_frames": 4}, "size: expected"),
        ({"num_frames": 4, "size": 16, "frame_stride": 2, "sample_fps": 4}, "give one of them"),
        ({"num_frames": 4, "size": 16, "sample_fps": -1}, "sample_fps: expected a positive"),
        ({"num_frames": 4, "buckets": []}, "buckets: expected a non-empty"),
    ],
)
def test_bad_sampling_settings(tmp_path: Path, clips: dict[str, bytes], kwargs: dict, match: str) -> None:
    write_tar(tmp_path / "a.tar", {"k.mp4": clips["good.mp4"], "k.txt": b"x"})
    with pytest.raises(ValueError, match=match):
        WebDatasetVideos(tmp_path, **kwargs)


def test_skip_counter_is_dict_like_and_rejects_unknown_reasons() -> None:
    counter = SkipCounter("demo")
    assert not counter and counter.summary() == "demo: skipped no samples"
    counter.add("corrupt", "x.mp4")
    counter.add("corrupt", "y.mp4")
    assert counter and dict(counter) == {"corrupt": 2} and counter["too_short"] == 0 and counter.total == 2
    with pytest.raises(ValueError, match="reason: unknown skip reason"):
        counter.add("bogus")


def test_skip_counter_copies_count_on_their_own() -> None:
    counter = SkipCounter("demo")
    counter.add("corrupt")
    copy = pickle.loads(pickle.dumps(counter))
    copy.add("empty")
    assert dict(counter) == {"corrupt": 1} and dict(copy) == {"corrupt": 1, "empty": 1}
