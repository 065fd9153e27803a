"""Shared benchmark helpers: timing in alternating rounds so both sides see the same machine drift."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def rate(fn: Callable[[int], object], n: int) -> float:
    """Operations per second of fn(i) for i in range(n)."""
    started = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - started)


def alternating(
    baseline: Callable[[int], object], ours: Callable[[int], object], n: int, rounds: int = 5
) -> tuple[float, float]:
    """Median rates of baseline and ours, measured in alternating rounds after one warm-up each."""
    rate(baseline, max(1, n // 10))
    rate(ours, max(1, n // 10))
    base_rates: list[float] = []
    our_rates: list[float] = []
    for _ in range(rounds):
        base_rates.append(rate(baseline, n))
        our_rates.append(rate(ours, n))
    return statistics.median(base_rates), statistics.median(our_rates)


def table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
