"""What the benchmark scripts share: timing per iteration on a noisy machine."""

from __future__ import annotations

import time


def per_iteration(fit, short: int = 2, long: int = 12, trials: int = 3) -> float:
    """Seconds per iteration: (time of ``fit(long)`` - time of ``fit(short)``) / (long - short).

    ``fit(n)`` runs a fit of ``n`` iterations and returns the number it did
    (checked, so that no run stops early). The difference leaves out what a
    fit does once (checks, conversion, a final pass). Returns the best of
    ``trials`` measurements, after one warm-up fit: on a shared machine
    noise only ever adds time.
    """
    fit(short)  # warm up: compiled kernels, thread pools
    times = []
    for _ in range(trials):
        began = time.perf_counter()
        done_short = fit(short)
        middle = time.perf_counter()
        done_long = fit(long)
        ended = time.perf_counter()
        assert (done_short, done_long) == (short, long), (done_short, done_long)
        times.append(((ended - middle) - (middle - began)) / (long - short))
    return min(times)


def best_time(fn, repeats: int) -> float:
    """The best time of ``fn()`` over ``repeats`` calls, after one warm-up call (noise on
    a shared machine only adds)."""
    fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)
