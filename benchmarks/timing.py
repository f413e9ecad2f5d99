"""The one way the benchmark scripts time things side by side (imported by each script)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each call after a warm-up, the calls timed in turn within every repeat.

    One call of each per round, so that a slow spell of the machine hits all of them alike; the
    order is reversed every other round, so that no call always runs first.
    """
    for fn in fns.values():
        fn()  # warm-up: first-call allocations and lazy imports are not what is measured
    times: dict[str, list[float]] = {name: [] for name in fns}
    for repeat in range(repeats):
        order = list(fns.items()) if repeat % 2 == 0 else list(fns.items())[::-1]
        for name, fn in order:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
