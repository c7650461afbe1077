"""Runs that produce numbers: simulate, benchmarks (and later the paper grid)."""
