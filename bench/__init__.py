"""Benchmarks: every pipeline stage beside its baseline and its physical limit (BENCHMARKS.md).

Run `python -m bench.run` (full, writes BENCHMARKS.md) or `python -m bench.run --smoke`
(tiny sizes, writes its report to a temporary file). See bench/run.py for the options.
"""
