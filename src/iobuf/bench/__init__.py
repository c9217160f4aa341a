"""Benchmarks of iobuf against Python's other ways to get a buffer.

``python -m iobuf.bench`` runs the full harness (each cell in a fresh process);
:func:`measure_cycles` / :func:`format_table` are the quick in-process
comparison the demo prints.
"""

from ._quick import CycleResult, format_table, measure_cycles

__all__ = ["CycleResult", "format_table", "measure_cycles"]
