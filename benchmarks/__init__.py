"""Benchmark suite for microasgi and its peers (not part of the installed package)."""
