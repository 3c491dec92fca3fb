"""Keeping tables fast as they age: retention, compaction, checkpoints, log clean-up, vacuum.

A sibling of the pipeline: it works on the Delta tables the sink writes, never on the WAL or
the buffers, and commits as its own Delta writer.
"""

from collector.maintenance.compaction import Compaction, row_times
from collector.maintenance.lease import Lease, LeaseLost
from collector.maintenance.maintainer import (
    Maintainer,
    MaintenancePolicy,
    TableReport,
    maintenance_status,
)

__all__ = [
    "Compaction",
    "Lease",
    "LeaseLost",
    "Maintainer",
    "MaintenancePolicy",
    "TableReport",
    "maintenance_status",
    "row_times",
]
