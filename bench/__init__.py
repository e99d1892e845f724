"""Benchmarks (run as scripts, e.g. ``python bench/orchestration.py``); not collected by pytest."""
