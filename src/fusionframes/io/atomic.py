"""Write a file under a temporary name in its folder and rename it into place, so readers never see a
half-written file and a failure leaves nothing behind.

A process killed mid-write (SIGKILL, power loss) cannot clean up, so every temporary name records the
process that writes it (``.NAME.tmp-PID-RANDOM...``), and each later write to ``NAME`` first removes the
temporaries of ``NAME`` whose process is gone (:func:`remove_stale_temporaries`). Names written by older
versions, without a PID, are removed once they are an hour old. (The PID is of this machine: folders shared
by several machines would need the host too; none of this project's writers share one.)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

LEGACY_STALE_SECONDS = 3600.0


def temp_sibling(target: Path, suffix: str = "") -> Path:
    """A hidden temporary path beside ``target`` (one filesystem, so the final ``os.replace`` is atomic),
    after removing the stale temporaries earlier runs left for it."""
    remove_stale_temporaries(target)
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell (e.g. not POSIX): keep it
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove temporaries of ``target`` whose writing process no longer runs; returns what was removed."""
    folder = target.parent
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:tmp-(?:(\d+)-)?[0-9a-f]{{8}}.*|[a-z0-9_]{{8}})")
    removed: list[Path] = []
    try:
        children = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for child in children:
        match = pattern.fullmatch(child.name)
        if match is None:
            continue
        try:
            if match.group(1) is not None:
                stale = not _process_alive(int(match.group(1)))
            else:  # no PID (older versions; mkstemp names): only when surely abandoned
                stale = now - child.lstat().st_mtime > LEGACY_STALE_SECONDS
            if not stale:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
            removed.append(child)
        except OSError as error:  # a cleanup failure must not stop the write
            logger.warning("could not remove stale temporary %s: %s", child, error)
    if removed:
        logger.info("removed %d stale temporary file(s) of %s", len(removed), target)
    return removed


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``."""
    tmp = temp_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_writable_folder(path: Path, name: str) -> None:
    """``path`` is, or can be made as, a writable folder; else an error naming the option ``name``.

    Checked before any work starts, so a long job does not fail at its first write.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{name}: {path} exists and is not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{name}: {existing} is not a folder, so {path} cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{name}: cannot write to {existing} (permission denied)")
