"""Benchmarks behind BENCHMARKS.md; each module has `run() -> str` (a markdown section)."""
