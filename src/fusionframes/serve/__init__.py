"""``fusionframes serve``: a local web UI and HTTP API over a persistent job queue.

- :mod:`fusionframes.serve.jobs`: the SQLite job store and the outputs folder.
- :mod:`fusionframes.serve.worker`: runners per mode (t2v, animate, movie) and worker threads.
- :mod:`fusionframes.serve.app`: the FastAPI app (API, progress events, the page).
- ``fusionframes serve`` (options in :mod:`fusionframes.cli.serve`); ``python -m fusionframes.serve.cli``
  is the same command.

Nothing heavy is imported here, so ``fusionframes --help`` stays fast.
"""
