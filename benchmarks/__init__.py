"""Benchmarks: performance targets measured side by side (``python -m benchmarks.NAME``)."""
