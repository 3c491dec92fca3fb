"""The usage dashboard: figures over the OTLP and proxy tables of a warehouse, for every
coding agent, behind a JSON API on the collector's listener (see api.py)."""

from collector.dashboard.api import Dashboard
from collector.dashboard.figures import FilterError, Filters

__all__ = ["Dashboard", "FilterError", "Filters"]
