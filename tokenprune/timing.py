"""Interleaved timing: every speedup tokenprune prints (the benchmarks, the demo, `tokenprune eval`)
comes from `interleaved`.

Every configuration first runs untimed (lazy initialisation, allocator and cache warm-up), then once
per round. Taking turns within each round lets load from other processes and slow drift fall on all
configurations alike, where timing one configuration's runs after another's would charge each the load
of its own moment. Torch-free, so the demo, the evaluation harness and the benchmark scripts can all
import it. A clock is any function returning seconds: process CPU time or wall time (`clock_for`), or
the GPU's own timeline read from CUDA events (`CudaEventClock` in benchmarks/common.py).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext

Clock = Callable[[], float]


def clock_for(threads: int) -> Clock:
    """The clock for work on `threads` threads. One thread: CPU time of the process, which other jobs
    on a shared machine do not inflate. More threads: wall time, because CPU time adds up the work of
    every thread (spin-waiting workers included), so it would hide the latency that parallelism saves."""
    return time.process_time if threads == 1 else time.perf_counter


def interleaved(
    configs: Mapping[str, Callable[[], object]],
    rounds: int,
    *,
    clock: Clock,
    warmup: int = 1,
    setup: Callable[[str], AbstractContextManager] | None = None,
) -> dict[str, list[float]]:
    """Seconds of `rounds` timed runs of every config, by name.

    Each config runs `warmup` times untimed, then once per round; round r starts at config
    r * len(configs) // rounds and wraps around, so no config always runs first or last. `setup(name)`
    is entered around every run outside the timed region (applying a pruner's hooks, say). A config's
    last `rounds` runs are the timed ones: callables that record more per run keep their last entries.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(configs)
    enter = setup or (lambda _name: nullcontext())

    def run(name: str) -> float:
        with enter(name):
            started = clock()
            configs[name]()
            return clock() - started

    for _ in range(warmup):
        for name in names:
            run(name)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        start = round_ * len(names) // rounds
        for name in names[start:] + names[:start]:
            seconds[name].append(run(name))
    return seconds


def medians(seconds: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {name: statistics.median(runs) for name, runs in seconds.items()}


def speedup(
    base: Sequence[float],
    runs: Sequence[float],
    statistic: Callable[[Sequence[float]], float] = statistics.median,
) -> float:
    """How many times faster `runs` are than `base`: by their medians, or by another statistic (`sum`
    when the runs answer different questions)."""
    return statistic(base) / statistic(runs)


def spread(base: Sequence[float], runs: Sequence[float]) -> tuple[float, float]:
    """Smallest and largest speedup of a single round (`base[r] / runs[r]`, the two timed in the same
    round): how much a speedup from these runs can be trusted, shown next to it."""
    if len(base) != len(runs) or not runs:
        raise ValueError(
            f"spread needs the same number of rounds on both sides, got {len(base)} and {len(runs)}"
        )
    ratios = [b / r for b, r in zip(base, runs)]
    return min(ratios), max(ratios)
