"""Interleaved timing for the side-by-side benchmark scripts (bench_conv.py, bench_upsample.py)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import mlx.core as mx


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """A call of `fn` that evaluates what it returns and gives the seconds taken."""

    def run() -> float:
        start = time.perf_counter()
        mx.eval(fn())
        return time.perf_counter() - start

    return run


def interleaved(contenders: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median seconds of each contender, one call of each in turn, after one warm-up call each."""
    for run in contenders.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            times[name].append(run())
    return {name: statistics.median(values) for name, values in times.items()}
