"""``python -m fusionframes.serve.cli [serve] ...``: kept so existing scripts work; the same as
``fusionframes serve ...``, whose options live in :mod:`fusionframes.cli.serve`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from fusionframes.cli.serve import check_options, configure_serve, run_serve

__all__ = ["check_options", "configure_serve", "main", "run_serve"]


def main(argv: Sequence[str] | None = None) -> int:
    from fusionframes.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(["serve", *(argv[1:] if argv[:1] == ["serve"] else argv)])


if __name__ == "__main__":
    sys.exit(main())
