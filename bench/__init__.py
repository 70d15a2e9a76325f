"""Benchmarks: `python -m bench` runs every `bench_*.py` (see bench/README.md)."""
