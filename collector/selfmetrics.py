"""The collector's own counters, served as Prometheus text on ``GET /metrics``."""

from __future__ import annotations

from collections import defaultdict

__all__ = ["SelfMetrics"]

_HELP = {
    "otlp_delta_requests_total": "Export requests answered, by signal and outcome.",
    "otlp_delta_rows_accepted_total": "Rows accepted into the buffers, by signal.",
    "otlp_delta_records_rejected_total": "Records left out of requests (partial success).",
    "otlp_delta_values_truncated_total": "String values cut to --max-value-bytes.",
    "otlp_delta_attributes_dropped_total": "Attributes dropped beyond --max-attributes.",
    "otlp_delta_retries_deduplicated_total": "Requests recognised as retries and not stored again.",
    "otlp_delta_proxy_spans_exported_total": "Proxied calls' spans sent to the trace export URL.",
    "otlp_delta_proxy_spans_dropped_total": "Proxied calls' spans the trace export gave up on.",
}


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"


class SelfMetrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(
            lambda: defaultdict(float)
        )

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        if value:
            self._counters[name][tuple(sorted(labels.items()))] += value

    def value(self, name: str, **labels: str) -> float:
        return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def render(
        self,
        gauges: dict[str, tuple[str, float]],
        counters: dict[str, tuple[str, float]] | None = None,
    ) -> str:
        """Our counters, then ``counters`` kept elsewhere (the maintainers' totals), then
        ``gauges``; each as ``name: (help, value)``."""
        lines = []
        for name in sorted(set(_HELP) | set(self._counters)):
            lines.append(f"# HELP {name} {_HELP.get(name, name)}")
            lines.append(f"# TYPE {name} counter")
            for labels, value in sorted(self._counters.get(name, {}).items()):
                lines.append(f"{name}{_labels(labels)} {value:g}")
        for kind, values in (("counter", counters or {}), ("gauge", gauges)):
            for name, (help_text, value) in sorted(values.items()):
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                lines.append(f"{name} {value:g}")
        return "\n".join(lines) + "\n"
