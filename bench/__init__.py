"""Benchmarks (make bench); each script runs on its own: python bench/<name>.py."""
