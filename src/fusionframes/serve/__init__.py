"""``fusionframes serve``: a local web UI and HTTP API over a persistent job queue.

- :mod:`fusionframes.serve.jobs`: the SQLite job store and the outputs folder.
- :mod:`fusionframes.serve.worker`: runners per mode (t2v, animate, movie) and worker threads.
- :mod:`fusionframes.serve.app`: the FastAPI app (API, progress events, the page).
- :mod:`fusionframes.serve.cli`: ``add_serve`` for the main CLI, and ``python -m fusionframes.serve.cli``.

Nothing heavy is imported here, so ``fusionframes --help`` stays fast.
"""

from __future__ import annotations

__all__ = ["add_serve"]


def __getattr__(name: str):
    if name == "add_serve":
        from fusionframes.serve.cli import add_serve

        return add_serve
    raise AttributeError(f"module 'fusionframes.serve' has no attribute {name!r}")
