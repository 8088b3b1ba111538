"""One video on several processes (one per device): see :mod:`fusionframes.parallel.branches`."""

from fusionframes.parallel.branches import (
    BranchParallel,
    SequentialBranches,
    branch_blocks,
    distribute_branches,
)

__all__ = ["BranchParallel", "SequentialBranches", "branch_blocks", "distribute_branches"]
