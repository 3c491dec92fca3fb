"""The usage dashboard: figures over the OTLP and proxy tables of a warehouse, for every
coding agent, on a page and behind a JSON API on the collector's listener (see api.py). The
reading side (data.py, figures.py: polars) is imported on the dashboard's first use."""

from collector.dashboard.api import Dashboard

__all__ = ["Dashboard"]
