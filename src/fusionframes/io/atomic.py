"""Write a file under a temporary name in its folder and rename it into place, so readers never see a
half-written file and a failure leaves nothing behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def default_mode(kind: str = "file") -> int:
    """The permissions a plain ``open()`` (file) or ``mkdir()`` (folder) would give under the umask.

    ``tempfile`` makes its files 0600 and folders 0700 (private while being written); a file renamed into
    place should not keep that.
    """
    umask = os.umask(0)
    os.umask(umask)
    return (0o666 if kind == "file" else 0o777) & ~umask


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
