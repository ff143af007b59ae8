"""What the model benchmarks add to `tokenprune.timing`'s interleaved loop: the thread count and its
clock, the GPU's clock (CUDA events), prefill configs that apply a pruner outside the timed region and
record what each run spent in the vision tower and in selection, peak memory (resident on the CPU,
allocated on the GPU), and the summary shared by the Qwen2.5-VL and LLaVA-NeXT tables.

The loop itself lives in `tokenprune.timing`, not here: the demo and `tokenprune eval` print speedups
too and are installed, while benchmarks/ is a folder of scripts, so one loop importable by all of them
has to be in the package. This module extends it with what needs torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

import tokenprune as tp
from tokenprune.compose import as_composed
from tokenprune.timing import Clock, clock_for, interleaved, medians

# the method a pruner of each stage selects with
SELECT_METHOD = {"in_tower": "step", "pre_llm": "select", "llm": "select_layer", "prefill": "select_prompt"}
RESULTS = Path(__file__).parent / "results"


def benchmark_parser(
    doc: str, runs: int, *, budgets: str | None = None, results: str | None = None
) -> argparse.ArgumentParser:
    """The options every prefill benchmark takes (--runs, --threads, --quick), described by the first
    paragraph of `doc`; --budgets and --out (a file in benchmarks/results/) where given defaults."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=runs, help="timed rounds over all configs (median)")
    parser.add_argument("--threads", type=int, default=1, help="1: CPU time of the process; more: wall time")
    parser.add_argument("--quick", action="store_true", help="tiny model, to check the script runs")
    if budgets is not None:
        parser.add_argument("--budgets", default=budgets)
    if results is not None:
        parser.add_argument("--out", default=str(RESULTS / results))
    return parser


def write_json(path: str | Path, data) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2))


def run_conditions(threads: int, runs: int, load_before: float | None = None) -> str:
    """How a table was timed, for the line above it; with the load average before the runs and now
    where `load_before` is given."""
    conditions = (
        f"{threads} thread(s) ({clock_name(threads)}), {platform.processor() or platform.machine()}; "
        f"median of {runs} interleaved rounds"
    )
    if load_before is not None:
        conditions += f"; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    return conditions


def sizes(g, part: str, **extra) -> dict:
    """A builder's sizes for the `part` ("vision" or "text") of a geometry: its `{part}_*` fields
    without the prefix, plus `extra`."""
    names = ("hidden", "ffn", "layers", "heads", "kv_heads")
    return {name: getattr(g, f"{part}_{name}") for name in names if hasattr(g, f"{part}_{name}")} | extra


def visual_pruners(budget, depth: int) -> dict[str, object]:
    """The visual-token pruners every prefill table compares, at `budget`, for a `depth`-layer LLM."""
    return {
        "DivPrune": tp.DivPrune(budget),
        "VisionZip": tp.VisionZip(budget),
        "FoPru (rank)": tp.FoPru(budget),
        "FoPru (row)": tp.FoPru(budget, strategy="row"),
        "Random": tp.RandomPrune(budget),
        "Uniform": tp.UniformPrune(budget),
        "FastV (K=2)": tp.FastV(budget, layer=2),
        f"Feather ({depth // 4},{depth // 2})": tp.Feather(budget, layers_at=(depth // 4, depth // 2)),
        "CDPruner": tp.CDPruner(budget),
        "CDPruner (two-sided)": tp.CDPruner(budget, theta=0.8, two_sided=True),
        "DART (K=2)": tp.DART(budget, layer=2),
    }


def tokens_per_layer(records, layers: int, fixed: int, candidates: int) -> list[int]:
    """Tokens each of `layers` decoder layers ran at: the `fixed` ones (text, never pruned) plus the
    visual `candidates`, or plus what the last pruning record before that layer kept (in-tower and
    pre-LLM records: before the first layer)."""
    counts = [fixed + candidates] * layers
    for r in records:
        for layer in range(0 if r.stage in ("in_tower", "pre_llm") else r.layer, layers):
            counts[layer] = fixed + r.tokens_after
    return counts


def prefill_flops(g, vision_flops: float, layer_flops, tokens_per_layer: list[int]) -> float:
    """FLOPs of a prefill: the vision side, each decoder layer at the length it ran
    (`layer_flops(g, tokens)`) and the logits of the last token."""
    return vision_flops + sum(layer_flops(g, n) for n in tokens_per_layer) + 2 * g.text_hidden * g.vocab


def use_threads(threads: int) -> Clock:
    """Run torch on `threads` threads; the clock that times them (`tokenprune.timing.clock_for`)."""
    torch.set_num_threads(threads)
    return clock_for(threads)


def clock_name(threads: int) -> str:
    return "process CPU time" if threads == 1 else "wall time"


class PeakRss:
    """Peak resident memory above the level at entry, from the kernel's high-water mark, reset on
    entry: no sampling thread, whose CPU time would count in the process's CPU time."""

    def __enter__(self) -> PeakRss:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset VmHWM to the current RSS
        self.start_kb = self._status_kb("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        self.extra_mb = (self._status_kb("VmHWM") - self.start_kb) / 1024

    @staticmethod
    def _status_kb(key: str) -> int:
        return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


class CudaEventClock:
    """Seconds on the GPU's timeline, for `tokenprune.timing.interleaved`: each reading records a CUDA
    event on the current stream and waits for it, so the difference of two readings is the time the
    GPU took from one event to the next, kernels and the host's launch gaps between them included
    (what a user waits for), none of the work queued before the first. Readings add up the elapsed
    times between consecutive events, each short, so precision does not fall as the run goes on."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.last = self._event()

    @staticmethod
    def _event():
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        event.synchronize()
        return event

    def __call__(self) -> float:
        event = self._event()
        self.seconds += self.last.elapsed_time(event) / 1e3  # milliseconds
        self.last = event
        return self.seconds


class PeakCuda:
    """Peak GPU memory allocated by tensors above the level at entry (the caching allocator's own
    statistics, reset on entry)."""

    def __enter__(self) -> PeakCuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.synchronize()
        self.extra_mb = (torch.cuda.max_memory_allocated() - self.start) / 2**20


@dataclass
class PrefillRuns:
    """What the runs of one config recorded besides their time, one entry per run."""

    tower: list[float] = field(default_factory=list)  # seconds in the vision tower
    selection: list[float] = field(default_factory=list)  # seconds in the pruner's select method
    peak_mb: list[float] = field(default_factory=list)
    records: list = field(default_factory=list)  # of the last run

    def keep_last(self, runs: int) -> None:
        """Drop the warm-up runs' entries (`interleaved` times a config's last runs)."""
        self.tower, self.selection, self.peak_mb = (
            self.tower[-runs:],
            self.selection[-runs:],
            self.peak_mb[-runs:],
        )


def timed_selection(pruner, clock: Clock, spent: list[float]) -> list[tuple[object, str]]:
    """Time each stage's selection with the benchmark's clock (records carry wall time) by wrapping
    the stage objects' select methods, and those of the copies `for_depth` makes of in-LLM stages
    whose layers are relative to the depth (LazySkip's schedule); returns what to undo."""

    def timing(select):
        def timed(*args, **kwargs):
            started = clock()
            result = select(*args, **kwargs)
            spent[0] += clock() - started
            return result

        return timed

    def resolving(stage, method: str):
        for_depth = stage.for_depth

        def resolved(num_layers: int):
            copy = for_depth(num_layers)
            if copy is not stage:
                object.__setattr__(copy, method, timing(getattr(copy, method)))
            return copy

        return resolved

    wrapped = []
    for stage in as_composed(pruner).stages:
        if stage.stage not in SELECT_METHOD:
            raise KeyError(f"no select method known for stage {stage.stage!r}: add it to SELECT_METHOD")
        method = SELECT_METHOD[stage.stage]
        object.__setattr__(stage, method, timing(getattr(stage, method)))
        wrapped.append((stage, method))
        if hasattr(stage, "for_depth"):
            object.__setattr__(stage, "for_depth", resolving(stage, method))
            wrapped.append((stage, "for_depth"))
    return wrapped


def prefill_timings(
    model,
    forward: Callable[[], object],
    pruners: Mapping[str, object],
    rounds: int,
    clock: Clock,
    tower=None,
    peak_memory: bool = False,
    meter: Callable[[], AbstractContextManager] = PeakRss,
    failures: dict[str, str] | None = None,
) -> tuple[dict[str, list[float]], dict[str, PrefillRuns]]:
    """Interleaved `forward()` prefills of `model` under each pruner (None: unpruned): seconds of the
    timed runs by name, and what those runs recorded. The tower's time (scoring hooks included) is
    taken by hooks on the `tower` module; peak memory when `peak_memory`, by `meter()` (a context
    manager leaving `extra_mb`: `PeakRss` on the CPU, `PeakCuda` on the GPU).

    Where `failures` is given, each config's warm-up run comes first and alone: a config whose warm-up
    raises is left out of the timed rounds, with its error in `failures[name]`, and the rest are timed
    without a second warm-up."""
    recorded = {name: PrefillRuns() for name in pruners}

    @contextmanager
    def setup(name: str):
        pruner, runs = pruners[name], recorded[name]
        tower_spent = [0.0, 0.0]  # seconds, start of the current tower call
        selecting = [0.0]
        hooks, wrapped, handle = [], [], None
        try:
            if tower is not None:
                hooks = [
                    tower.register_forward_pre_hook(lambda *_: tower_spent.__setitem__(1, clock())),
                    tower.register_forward_hook(
                        lambda *_: tower_spent.__setitem__(0, tower_spent[0] + clock() - tower_spent[1])
                    ),
                ]
            if pruner is not None:
                wrapped = timed_selection(pruner, clock, selecting)
                handle = tp.apply(model, pruner)
            with torch.no_grad(), meter() if peak_memory else nullcontext() as memory:
                yield
            runs.records = list(handle.stats) if handle is not None else []
        finally:
            if handle is not None:
                handle.remove()
            for hook in hooks:
                hook.remove()
            for stage, method in wrapped:
                object.__delattr__(stage, method)
        runs.tower.append(tower_spent[0])
        runs.selection.append(selecting[0])
        if memory is not None:
            runs.peak_mb.append(memory.extra_mb)

    names, warmup = list(pruners), 1
    if failures is not None:
        for name in list(names):
            try:
                with setup(name):
                    forward()
            except Exception as error:  # one config failing is reported, not raised
                failures[name] = f"{type(error).__name__}: {error}"
                names.remove(name)
                del recorded[name]
        warmup = 0
    seconds = interleaved({name: forward for name in names}, rounds, clock=clock, setup=setup, warmup=warmup)
    for runs in recorded.values():
        runs.keep_last(rounds)
    return seconds, recorded


def summarize(
    seconds: dict[str, list[float]], recorded: dict[str, PrefillRuns], flops_of, tower_flops: float | None
) -> tuple[dict, list[dict]]:
    """Medians per config ("name@budget" keys, "unpruned" the reference) against the unpruned run
    (the prefill tables). `flops_of(records)` counts a prefill's FLOPs from its pruning records ([]:
    unpruned); `tower_flops` is the part of them spent in the timed tower, None where pruning inside
    the tower changes that part (no tower-aware columns then)."""
    prefill = medians(seconds)
    base_time = prefill["unpruned"]
    base_tower = statistics.median(recorded["unpruned"].tower)
    base_flops = flops_of([])
    rows = []
    for key, runs in recorded.items():
        if key == "unpruned":
            continue
        name, budget = key.rsplit("@", 1)
        flops = flops_of(runs.records)
        ideal = base_flops / flops
        speedup = base_time / prefill[key]
        row = {
            "pruner": name,
            "budget": float(budget),
            "tokens": runs.records[-1].tokens_after,
            "prefill_s": prefill[key],
            "tower_s": statistics.median(runs.tower),
            "speedup": speedup,
            "ideal": ideal,
            "ratio": speedup / ideal,
        }
        if tower_flops is not None:
            # best case when the tower costs what it measured unpruned and the rest scales with its FLOPs
            rest = (flops - tower_flops) / (base_flops - tower_flops)
            tower_aware = base_time / (base_tower + (base_time - base_tower) * rest)
            row |= {"tower_aware_ideal": tower_aware, "tower_aware_ratio": speedup / tower_aware}
        row["selection_pct"] = 100 * statistics.median(runs.selection) / base_time
        rows.append(row)
    return {"prefill_s": base_time, "tower_s": base_tower}, rows


def pruned_configs(budgets: list, pruners_for) -> dict[str, object]:
    """The unpruned model and every pruner of `pruners_for(budget)` at each budget, as "name@budget"."""
    configs: dict[str, object] = {"unpruned": None}
    for budget in budgets:
        configs |= {f"{name}@{budget}": pruner for name, pruner in pruners_for(budget).items()}
    return configs
