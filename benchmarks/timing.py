"""Timing helpers shared by the benchmarks that time callables in one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time (s) of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time (s) of each function after one warm-up call each, alternating
    their order every round (fair when the machine's load drifts)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeats):
        for k in keys if r % 2 == 0 else keys[::-1]:
            start = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}
