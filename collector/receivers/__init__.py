"""Transports that take OTLP requests and hand them to the pipeline."""
