"""Benchmarks of the certification service: `python -m bench [--quick] [--json FILE]` (see README)."""
