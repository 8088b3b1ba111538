"""What counts as a user error, for the command line and for anything it calls.

Library code (pipelines, loaders, training) raises one of :data:`USER_ERRORS` when the *input* is wrong:
a bad option value, a missing or unreadable file, a model folder that does not fit together. The message
starts with the name of what is wrong (``"steps: must be ..."``, ``"model: ... has no config.json"``) so
the command line can print it as one line. Everything else is a bug and keeps its traceback.

Only the standard library is imported here, so any module (and ``fusionframes --help``) can use it.
"""

from __future__ import annotations

import errno


class UsageError(ValueError):
    """A bad option value or input, named in the message (``"NAME: what is wrong; what is allowed"``)."""


# Errors about what the user gave. OSError subclasses are the ones a path the user chose can cause; a bare
# OSError counts only for a full or read-only disk (see :func:`is_user_error`).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # UsageError, CheckpointError, bad config values, json.JSONDecodeError, UnicodeDecodeError
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FloatingPointError,  # a stage produced NaN/Inf: the message suggests another --dtype
    ImportError,  # an optional dependency an option needs is not installed: the message names it
)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is about the user's input or machine (printed as one line) rather than a bug."""
    if isinstance(error, USER_ERRORS):
        return True
    return isinstance(error, OSError) and error.errno in DISK_ERRNOS


def one_line(error: BaseException) -> str:
    """The message of a user error on one line; an OSError says which file (``[Errno 2]`` alone does not)."""
    if isinstance(error, OSError) and error.strerror:  # raised by the OS, not by a message of ours
        where = f": {error.filename}" if error.filename else ""
        text = f"{error.strerror}{where}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())
