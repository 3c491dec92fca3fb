"""Token use and cost per user and model from a Claude Code logs table, with polars.

.venv/bin/python examples/usage_report.py warehouse/main/agents/cc_otel_logs
"""

import sys

import polars as pl

table = sys.argv[1] if len(sys.argv) > 1 else "warehouse/main/agents/cc_otel_logs"
logs = pl.read_delta(table)
attr = pl.col("attributes")
requests = logs.filter(
    pl.coalesce(pl.col("event_name"), attr.map.get("event.name")).is_in(
        ["api_request", "claude_code.api_request"]
    )
)
report = (
    requests.with_columns(
        user=attr.map.get("user.id"),
        model=attr.map.get("model"),
        input_tokens=attr.map.get("input_tokens").cast(pl.Int64),
        output_tokens=attr.map.get("output_tokens").cast(pl.Int64),
        cost_usd=attr.map.get("cost_usd").cast(pl.Float64),
    )
    .group_by("user", "model")
    .agg(
        pl.len().alias("requests"),
        pl.sum("input_tokens"),
        pl.sum("output_tokens"),
        pl.sum("cost_usd"),
    )
    .sort("cost_usd", descending=True)
)
print(report)
