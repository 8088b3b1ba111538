"""``python -m fusionframes.cli ...`` (what torchrun runs): the same as the ``fusionframes`` script."""

import sys

from fusionframes.cli import main

sys.exit(main())
