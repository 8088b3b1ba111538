"""Issue 28.14: the parity tests say which folder they looked in when they skip (they said "got empty
parameter set" for a folder without cases, naming nothing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
@pytest.mark.parametrize("make", [False, True], ids=["missing folder", "folder without cases"])
def test_parity_skips_name_the_folder(tmp_path: Path, make: bool) -> None:
    folder = tmp_path / "parity"
    if make:
        folder.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            str(TESTS / "test_parity.py"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "FUSIONFRAMES_PARITY_DIR": str(folder)},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all(str(folder) in line for line in skips), result.stdout[-2000:]
    state = "has no such case" if make else "does not exist"
    assert f"no keyframe_unet* parity case: {folder} {state}" in result.stdout
    assert "warnings summary" in result.stdout  # loud: also in pytest's summary without -rs
