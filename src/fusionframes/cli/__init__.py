"""The ``fusionframes`` command line: argument parsing and checking only; the work is the package API's.

Layout: :mod:`.app` holds the parser, the command registry (:data:`.app.COMMANDS`) and :func:`main`;
:mod:`.options` the option groups several commands share (model, prompt, size, keyframe and
interpolation sampling), each declared once with the API's names (``--scheduler`` is ``scheduler=``);
one module per group of commands (:mod:`.generate`, :mod:`.animation`, :mod:`.training`,
:mod:`.evaluate`, :mod:`.serve`). A new command is a ``Command`` entry plus a ``configure_NAME(parser)``
that adds its options and sets ``handler``.

Start-up: this package and :mod:`.app` import only the standard library. ``fusionframes --help`` builds
no command's options; a command's options are built when it is named, and its handler imports torch,
transformers, diffusers, the camera and serve packages or the video codecs only when it runs.

Error policy (one for every command): every option is checked before a model is loaded. A *user error*
is printed as one line, ``fusionframes COMMAND: error: NAME: what is wrong; what is allowed``, with exit
status 2 and no traceback. User errors are, by type (:data:`fusionframes.errors.USER_ERRORS`):

- ``ValueError`` and its subclasses, among them :class:`fusionframes.errors.UsageError` (raise it for a
  bad option), ``CheckpointError``, ``json.JSONDecodeError`` and ``UnicodeDecodeError``;
- ``FileNotFoundError``, ``FileExistsError``, ``PermissionError``, ``IsADirectoryError``,
  ``NotADirectoryError``, and any ``OSError`` of a full, over-quota or read-only disk;
- ``FloatingPointError`` (a stage produced NaN/Inf) and ``ImportError`` (an optional package is missing);
- argparse's own refusals (unknown option, wrong type, a value out of its bounds).

Their messages start with the option or file they are about. Ctrl-C exits 130. Any other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations

from fusionframes.cli.app import COMMANDS, Command, build_parser, main, quiet_optional_library_logs
from fusionframes.errors import USER_ERRORS, UsageError

__all__ = [
    "COMMANDS",
    "USER_ERRORS",
    "Command",
    "UsageError",
    "build_parser",
    "main",
    "quiet_optional_library_logs",
]
