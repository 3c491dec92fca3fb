"""Run in MLflow's venv by tests/test_mlflow.py: MLflow's own client, asked what its server holds.

python traces.py URI experiment NAME     prints the id of a new experiment
python traces.py URI traces ID           prints the experiment's traces as JSON
"""

from __future__ import annotations

import base64
import json
import sys

import mlflow
from mlflow import MlflowClient


def _hex(value: str | None) -> str | None:
    return base64.b64decode(value).hex() if value else None


def traces(experiment_id: str) -> list[dict]:
    out = []
    for trace in mlflow.search_traces(locations=[experiment_id], return_type="list"):
        spans = []
        for span in trace.data.spans:
            raw = span.to_dict()
            spans.append({
                "name": span.name,
                "span_type": span.span_type,
                "trace_id": _hex(raw["trace_id"]),
                "span_id": _hex(raw["span_id"]),
                "parent_span_id": _hex(raw["parent_span_id"]),
                "status": raw["status"]["code"],
                "attributes": span.attributes,
            })  # fmt: skip
        out.append({
            "state": str(trace.info.state),
            "token_usage": trace.info.token_usage,
            "tags": {k: v for k, v in trace.info.tags.items() if not k.startswith("mlflow.")},
            "spans": spans,
        })  # fmt: skip
    return out


def main() -> None:
    uri, command, arg = sys.argv[1:4]
    mlflow.set_tracking_uri(uri)
    if command == "experiment":
        print(MlflowClient().create_experiment(arg))
    else:
        print(json.dumps(traces(arg)))


if __name__ == "__main__":
    main()
