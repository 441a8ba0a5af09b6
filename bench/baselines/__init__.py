"""Baseline servers for ``make bench`` (bench/run.py): not part of realtime."""
