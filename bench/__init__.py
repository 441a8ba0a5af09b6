"""Benchmarks: bench/micro.py, bench/fanout.py and `make bench` (bench/run.py)."""
