"""Issue 28.9: a write killed mid-way leaves hidden temporaries; the next write to that path removes them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fusionframes.io.atomic import atomic_write, remove_stale_temporaries
from fusionframes.io.video import write_video

SRC = str(Path(__file__).resolve().parent.parent / "src")

SLOW_WRITER = """
import sys
import time
import numpy as np
from fusionframes.io.video import write_video

def frames():  # slow to make and (noise) slow to encode, so the kill lands mid-write in every format
    for i in range(300):
        time.sleep(0.01)
        yield np.random.default_rng(i).integers(0, 255, (128, 128, 3), dtype=np.uint8)

write_video(frames(), sys.argv[1], fps=8)
"""


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_sigkill_during_an_encode_then_the_next_write_cleans_up(tmp_path: Path) -> None:
    for name in ("v.mp4", "v.gif", "frames/"):
        target = str(tmp_path / name)
        env = {**os.environ, "PYTHONPATH": SRC}
        child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, target], env=env)
        deadline = time.monotonic() + 60
        while not hidden(tmp_path) and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert hidden(tmp_path), f"{name}: the writer never started its temporary"
        child.send_signal(signal.SIGKILL)
        child.wait()
        left = hidden(tmp_path)
        assert left and all(".tmp-" in n for n in left)  # what the issue found
        write_video(np.zeros((2, 16, 16, 3), np.uint8), target, fps=8)
        assert hidden(tmp_path) == [], f"{name}: left {hidden(tmp_path)}"


def test_only_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "clip.mp4"
    dead, alive = dead_pid(), os.getppid()
    stale = [
        tmp_path / f".clip.mp4.tmp-{dead}-0123abcd.mp4",
        tmp_path / f".clip.json.tmp-{dead}-0123abcd.json",  # not clip.mp4's: kept by this call
        tmp_path / ".clip.mp4.tmp-89abcdef.mp4",  # an older version's name, without a PID
    ]
    live = tmp_path / f".clip.mp4.tmp-{alive}-0123abcd.mp4"  # another process still writing
    other = tmp_path / ".clip.mp4.notes"
    for path in (*stale, live, other):
        path.write_text("x")
    old = time.time() - 7200
    os.utime(stale[2], (old, old))
    removed = remove_stale_temporaries(target)
    assert sorted(removed) == sorted([stale[0], stale[2]])
    assert live.exists() and other.exists() and stale[1].exists()
    fresh = tmp_path / ".clip.mp4.tmp-fedcba98.mp4"  # PID-less but recent: maybe being written
    fresh.write_text("x")
    assert remove_stale_temporaries(target) == []


def test_atomic_write_cleans_its_own_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    left = tmp_path / f".summary.json.tmp-{dead_pid()}-00112233"
    left.write_text("partial")
    atomic_write(target, lambda tmp: tmp.write_text("{}"))
    assert target.read_text() == "{}" and not left.exists()
    assert hidden(tmp_path) == []
