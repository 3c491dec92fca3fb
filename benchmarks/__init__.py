"""Ingest throughput benchmarks: ``make bench`` (``python -m benchmarks``)."""
