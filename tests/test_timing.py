"""The interleaved timing loop every printed speedup comes from, on a fake clock."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from tokenprune import timing


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_config_is_timed_once_per_round_after_untimed_warmup():
    clock, calls, order = FakeClock(), {"a": 0, "b": 0, "c": 0}, []
    costs = {"a": 1.0, "b": 2.0, "c": 5.0}

    def config(name):
        def run():
            calls[name] += 1
            order.append(name)
            clock.now += costs[name]

        return run

    seconds = timing.interleaved({n: config(n) for n in costs}, rounds=3, clock=clock, warmup=2)
    assert calls == {"a": 5, "b": 5, "c": 5}
    assert seconds == {"a": [1.0] * 3, "b": [2.0] * 3, "c": [5.0] * 3}
    timed = order[6:]
    rounds = [timed[i : i + 3] for i in range(0, 9, 3)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]  # each config leads once


def test_setup_runs_around_every_run_outside_the_timed_region():
    clock, entered = FakeClock(), []

    @contextmanager
    def setup(name):
        clock.now += 100.0  # applying hooks must not count
        entered.append(name)
        yield
        clock.now += 100.0

    def work():
        clock.now += 0.5

    seconds = timing.interleaved({"x": work, "y": work}, rounds=2, clock=clock, setup=setup)
    assert seconds == {"x": [0.5, 0.5], "y": [0.5, 0.5]}
    assert entered.count("x") == entered.count("y") == 3  # one warm-up + two rounds


def test_medians_and_speedups():
    runs = {"unpruned": [4.0, 9.0, 5.0], "pruned": [1.0, 2.0, 8.0]}
    assert timing.medians(runs) == {"unpruned": 5.0, "pruned": 2.0}
    assert timing.speedup(runs["unpruned"], runs["pruned"]) == 2.5
    assert timing.speedup(runs["unpruned"], runs["pruned"], statistic=sum) == 18.0 / 11.0
    # per round: 4/1, 9/2, 5/8
    assert timing.spread(runs["unpruned"], runs["pruned"]) == (5.0 / 8.0, 4.5)
    with pytest.raises(ValueError, match="same number of rounds"):
        timing.spread([1.0, 2.0], [1.0])


def test_clock_follows_the_thread_count():
    import time

    assert timing.clock_for(1) is time.process_time
    assert timing.clock_for(4) is time.perf_counter


def test_rounds_must_be_positive():
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        timing.interleaved({"a": lambda: None}, rounds=0, clock=FakeClock())
