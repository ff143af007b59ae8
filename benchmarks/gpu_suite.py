"""GPU benchmark suite: visual prefill, prefill skipping and DivPrune selection at real model sizes, in one
command that finishes within --max-minutes (8) on one H100/H200, model construction included.

Models are built from configs at their published sizes with random weights in bf16, directly on the GPU
(no downloads; time and memory do not depend on the weights' values):

- LLaVA-1.5-7B (CLIP ViT-L/336 + 7B Llama; 576 image tokens + 60 text tokens): every registered
  visual-token pruner (`tokenprune.registry`, in-tower, pre-LLM and in-LLM) at 64, 128 and 192 tokens;
- Qwen2.5-VL-7B, an 896 x 896 image (1,024 merged tokens) and a 16-frame 392 x 504 video (2,016):
  the same pruners at 10, 20 and 30 % of the visual tokens;
- Llama-3-8B, prompts of 8k and 32k tokens: LazySkip (default schedule) and GemFilter (1,024 tokens);
- DivPrune's selection alone on N = 576, 2,880 and 16,384 tokens of width 4,096.

Every prefill is timed on the GPU's clock (CUDA events, `common.CudaEventClock`) through the shared
interleaved loop (`tokenprune.timing.interleaved` via `common.prefill_timings`): each config runs once
untimed, then once per round, each round starting at another config; medians over the rounds. Columns
as in the CPU benchmarks (docs/benchmarks.md), plus the peak GPU memory a prefill allocates above what
was allocated before it (the weights). A pruner the model's adapter does not support is a skipped
row, as is what an in-tower method refuses with a ValueError (ToMe in Qwen's packed attention, videos,
too many merges per block for the tower's depth), one that fails otherwise is an error row; a step that would end past --max-minutes is skipped and
recorded. The estimate printed first comes from each step's FLOPs at an assumed sustained throughput
plus a per-forward overhead; later steps are scaled by how far the measured steps ran over theirs.
The JSON and Markdown files are rewritten after every step, so a run cut short keeps what it measured.

Runs from a checkout without installing it (python with torch and transformers):

    PYTHONPATH=. python benchmarks/gpu_suite.py [--out DIR] [--runs 5] [--max-minutes 8]
    python benchmarks/gpu_suite.py --smoke    # the same steps at tiny sizes on the CPU
    python benchmarks/gpu_suite.py --plan     # the steps and their estimated duration, nothing run
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import common
import prefill_skip
import torch
import visual_prefill as llava_bench
import visual_prefill_qwen as qwen_bench

import tokenprune as tp
from tokenprune import registry
from tokenprune.compose import STAGE_ORDER
from tokenprune.pruners.base import VisualTokens
from tokenprune.timing import interleaved, medians
from tokenprune.zoo import builders

STARTED = time.monotonic()
ROOT = Path(__file__).resolve().parents[1]


def use_source_tree() -> None:
    """tokenprune imported from a checkout (PYTHONPATH=.) rather than installed: `adapters/` installs as
    `tokenprune.adapters`, so register it under that name when no installed copy provides it."""
    if importlib.util.find_spec("tokenprune.adapters") is not None:
        return
    spec = importlib.util.spec_from_file_location(
        "tokenprune.adapters",
        ROOT / "adapters" / "__init__.py",
        submodule_search_locations=[str(ROOT / "adapters")],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


LLAVA_7B = llava_bench.Geometry(
    vision_hidden=1024, vision_layers=24, vision_heads=16, vision_ffn=4096,
    text_hidden=4096, text_layers=32, text_heads=32, text_ffn=11008,
)  # fmt: skip
QWEN_7B = dict(
    vision_hidden=1280, vision_layers=32, vision_heads=16, vision_ffn=3420, full_attention_every=8,
    text_hidden=3584, text_layers=28, text_heads=28, text_kv_heads=4, text_ffn=18944,
)  # fmt: skip
LLAMA_3_8B = prefill_skip.Shape(hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=128256)


@dataclass(frozen=True)
class Sizes:
    """What the suite runs: the real sizes on the GPU, tiny ones for --smoke."""

    llava: llava_bench.Geometry
    llava_budgets: tuple[int, ...]
    qwen: tuple[qwen_bench.Geometry, ...]
    qwen_budgets: tuple[float, ...]
    llm: prefill_skip.Shape
    lengths: tuple[int, ...]
    selection: tuple[tuple[int, int], ...]  # DivPrune alone: (tokens, kept)
    selection_dim: int
    rounds: int


FULL = Sizes(
    llava=LLAVA_7B,
    llava_budgets=(64, 128, 192),
    qwen=(
        replace(qwen_bench.IMAGE, name="image 896x896 px", grid_thw=(1, 64, 64), **QWEN_7B),  # 32 x 32 merged
        replace(qwen_bench.VIDEO, **QWEN_7B),
    ),
    qwen_budgets=(0.1, 0.2, 0.3),
    llm=LLAMA_3_8B,
    lengths=(8192, 32768),
    # LLaVA-1.5 and LLaVA-NeXT at their tables' budgets, and a long video at 10 %
    selection=((576, 64), (2880, 640), (16384, 1638)),
    selection_dim=4096,
    rounds=5,
)
SMOKE_QWEN = dict(vision_layers=4, full_attention_every=2, text_layers=4)
SMOKE = Sizes(
    llava=replace(llava_bench.QUICK, text_layers=4),  # 64 image tokens
    llava_budgets=(8, 16),
    qwen=(
        replace(qwen_bench.QUICK[0], grid_thw=(1, 8, 8), **SMOKE_QWEN),  # 16 merged tokens
        replace(qwen_bench.QUICK[1], grid_thw=(2, 8, 8), **SMOKE_QWEN),  # 32
    ),
    qwen_budgets=(0.25, 0.5),
    llm=replace(prefill_skip.QUICK, layers=4),
    lengths=(1100, 1300),  # above GemFilter's 1,024 tokens
    selection=((64, 8), (144, 16), (600, 60)),  # 600: DivPrune's blockwise similarity
    selection_dim=64,
    rounds=1,
)


@dataclass(frozen=True)
class Device:
    """Where the suite runs: the device, the weights' dtype, the clock of the timing loop and the
    meter of peak memory (`common.PeakCuda` / `common.PeakRss`)."""

    name: str
    dtype: torch.dtype
    clock: Callable[[], float]
    meter: Callable[[], object]
    description: str

    @contextmanager
    def building(self):
        """Parameters created here are allocated on the device in the suite's dtype: no copy from the
        CPU, no float32 detour."""
        previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            with torch.device(self.name):
                yield
        finally:
            torch.set_default_dtype(previous)

    def to(self, inputs: dict) -> dict:
        return {
            key: value.to(self.name, self.dtype if value.is_floating_point() else None)
            if isinstance(value, torch.Tensor)
            else value
            for key, value in inputs.items()
        }

    def release(self) -> None:
        gc.collect()
        if self.name == "cuda":
            torch.cuda.empty_cache()


def cuda_device(dtype: torch.dtype) -> Device:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: --smoke runs the suite's steps at tiny sizes on the CPU")
    properties = torch.cuda.get_device_properties(0)
    return Device(
        "cuda",
        dtype,
        common.CudaEventClock(),
        common.PeakCuda,
        f"{properties.name} ({properties.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}",
    )


def cpu_device(dtype: torch.dtype) -> Device:
    return Device(
        "cpu",
        dtype,
        common.use_threads(1),
        common.PeakRss,
        f"CPU {platform.processor() or platform.machine()}, 1 thread (process CPU time)",
    )


# Assumptions behind the printed estimate: bf16 throughput an eager prefill sustains (a third of an
# H100's dense peak, or less), and fixed costs that do not scale with FLOPs.
TFLOPS = 200.0
STARTUP_S = 40.0  # imports, CUDA context, cuBLAS
BUILD_S = 25.0  # a 7-8B model created and drawn on the device
FORWARD_S = 0.05  # launches, hooks, host work of one prefill
LAUNCH_S = 30e-6  # one more kernel launch (Qwen's per-window vision attention, DivPrune's greedy steps)


def seconds_for(flops: float, forwards: int, overhead_s: float) -> float:
    return forwards * (flops / (TFLOPS * 1e12) + overhead_s)


@dataclass
class Step:
    name: str
    title: str
    estimate_s: float
    run: Callable[[], dict]


class Models:
    """One model on the device at a time; steps that share one run one after the other."""

    def __init__(self, device: Device) -> None:
        self.device, self.key, self.model = device, None, None

    def get(self, key: str, build: Callable[[], object]) -> tuple[object, dict]:
        """The model built by `build()` (reused while `key` stays the same), and how it was built."""
        if key == self.key:
            return self.model, {}
        self.key = self.model = None
        self.device.release()
        started = time.perf_counter()
        with self.device.building():
            # .to: a buffer a model creates on the CPU explicitly joins the rest
            self.model = build().to(self.device.name)
        if self.device.name == "cuda":
            torch.cuda.synchronize()
        self.key = key
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return self.model, {"build_s": time.perf_counter() - started, "weights_gib": weights / 2**30}


def visual_pruner_names() -> list[str]:
    """Every registered pruner meant for visual tokens, in forward order of their stages."""
    names = registry.pruner_names(drops="visual")
    rank = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    return sorted(names, key=lambda name: rank.get(registry.pruner_entry(name).stage, len(rank)))


def tolerant(flops_of: Callable[[list], float]) -> Callable[[list], float]:
    """`flops_of`, or NaN for records it cannot count (a stage it does not know)."""

    def count(records) -> float:
        try:
            return flops_of(records)
        except Exception:  # an unknown record shape leaves the ideal open, not the row
            return math.nan

    return count


def failed(error: str, **row) -> dict:
    return {**row, "status": "error", "reason": error[:400]}


def visual_prefill(
    model,
    inputs: dict,
    *,
    tower,
    depth: int,
    candidates: int,
    budgets: tuple,
    rounds: int,
    device: Device,
    flops_of: Callable[[list], float],
    tower_flops: float,
) -> dict:
    """Every registered visual-token pruner at every budget against the unpruned prefill."""
    from tokenprune.adapters.transformers import find_adapter

    supported = find_adapter(model).supported_stages
    configs: dict[str, object] = {"unpruned": None}
    budget_of: dict[str, int | float] = {}  # as given: `summarize` makes every budget a float
    rows: list[dict] = []
    for name in visual_pruner_names():
        stage = registry.pruner_entry(name).stage
        if stage not in supported:
            reason = f"{type(model).__name__} takes pruners of stages {supported}, not {stage!r}"
            print(f"    {name}: skipped ({reason})")
            rows.append({"pruner": name, "stage": stage, "status": "skipped", "reason": reason})
            continue
        for budget in budgets:
            budget_of[f"{name}@{budget}"] = budget
            try:
                configs[f"{name}@{budget}"] = registry.build(name, budget, depth=depth)
            except Exception as error:
                rows.append(
                    failed(f"{type(error).__name__}: {error}", pruner=name, stage=stage, budget=budget)
                )
    failures: dict[str, str] = {}
    seconds, recorded = common.prefill_timings(
        model,
        lambda: model(**inputs),
        configs,
        rounds,
        device.clock,
        tower=tower,
        peak_memory=True,
        meter=device.meter,
        failures=failures,
    )
    if "unpruned" in failures:
        raise RuntimeError(f"the unpruned prefill failed: {failures['unpruned']}")
    base, measured = common.summarize(seconds, recorded, tolerant(flops_of), tower_flops)
    measured_by_key = dict(zip([key for key in recorded if key != "unpruned"], measured))
    for key in configs:
        if key == "unpruned":
            continue
        name, budget = key.rsplit("@", 1)[0], budget_of[key]
        stage = registry.pruner_entry(name).stage
        if key in failures and stage == "in_tower" and failures[key].startswith("ValueError"):
            # what an in-tower method refuses by design (ToMe in Qwen's packed attention, videos,
            # more merges in one block than the tower's depth allows at this budget)
            print(f"    {key}: skipped ({failures[key]})")
            reason = failures[key][:400]
            rows.append(
                {"pruner": name, "stage": stage, "budget": budget, "status": "skipped", "reason": reason}
            )
        elif key in failures:
            print(f"    {key}: error ({failures[key]})")
            rows.append(failed(failures[key], pruner=name, stage=stage, budget=budget))
        else:
            row = {**measured_by_key[key], "budget": budget, "stage": stage}
            rows.append({**row, "peak_mb": max(recorded[key].peak_mb), "status": "ok"})
    rows.sort(key=lambda row: (row.get("budget") is not None, row.get("budget") or 0))
    unpruned = {**base, "tokens": candidates, "peak_mb": max(recorded["unpruned"].peak_mb)}
    return {"unpruned": unpruned, "rows": rows}


def bench_prefill(
    models: Models,
    key: str,
    bench,
    g,
    sizes: Sizes,
    device: Device,
    *,
    tower,
    candidates: int,
    budgets: tuple,
) -> dict:
    """`visual_prefill` of the model a prefill benchmark module (`bench`) builds at geometry `g`, with
    that module's inputs and FLOP counts; `tower(model)` is the vision tower to time."""
    model, built = models.get(key, lambda: bench.build_model(g))
    result = visual_prefill(
        model,
        device.to(bench.build_inputs(g)),
        tower=tower(model),
        depth=g.text_layers,
        candidates=candidates,
        budgets=budgets,
        rounds=sizes.rounds,
        device=device,
        flops_of=lambda records: bench.flops_of(g, records),
        tower_flops=bench.vision_flops(g),
    )
    return {**built, **result}


def llava_step(models: Models, sizes: Sizes, device: Device) -> Step:
    g = sizes.llava
    configs = 1 + len(visual_pruner_names()) * len(sizes.llava_budgets)
    estimate = BUILD_S + seconds_for(llava_bench.flops_of(g, []), configs * (1 + sizes.rounds), FORWARD_S)

    def run() -> dict:
        return bench_prefill(
            models,
            "llava",
            llava_bench,
            g,
            sizes,
            device,
            tower=lambda model: model.model.vision_tower,
            candidates=g.patches,
            budgets=sizes.llava_budgets,
        )

    title = (
        f"LLaVA-1.5 ({g.vision_layers}x{g.vision_hidden} CLIP tower, {g.text_layers}x{g.text_hidden} Llama): "
        f"{g.patches} image tokens + {g.text_tokens} text tokens, budgets in tokens"
    )
    return Step("llava", title, estimate, run)


def qwen_attention_calls(g: qwen_bench.Geometry) -> int:
    """SDPA calls of one pass through the Qwen2.5-VL tower: transformers runs one per window (or per
    frame in the full-attention blocks) outside flash attention."""
    from transformers.vision_utils import get_vision_window_index

    _, cu_windows = get_vision_window_index(
        torch.tensor([g.grid_thw]), qwen_bench.MERGE, qwen_bench.WINDOW, qwen_bench.PATCH
    )
    full = len(g.full_attention_blocks)
    return (g.vision_layers - full) * (len(cu_windows) - 1) + full * g.grid_thw[0]


def qwen_step(models: Models, sizes: Sizes, device: Device, g: qwen_bench.Geometry, first: bool) -> Step:
    configs = 1 + len(visual_pruner_names()) * len(sizes.qwen_budgets)
    overhead = FORWARD_S + LAUNCH_S * qwen_attention_calls(g)
    estimate = (BUILD_S if first else 0.0) + seconds_for(
        qwen_bench.flops_of(g, []), configs * (1 + sizes.rounds), overhead
    )

    def run() -> dict:
        return bench_prefill(
            models,
            "qwen",
            qwen_bench,
            g,
            sizes,
            device,
            tower=lambda model: model.model.visual,
            candidates=g.merged,
            budgets=sizes.qwen_budgets,
        )

    title = (
        f"Qwen2.5-VL ({g.vision_layers}x{g.vision_hidden} tower, {g.text_layers}x{g.text_hidden} LLM), "
        f"{g.name}: {g.merged} visual tokens + {g.text_tokens + 2} text tokens, budgets as fractions"
    )
    return Step(f"qwen-{g.kind}", title, estimate, run)


def prefill_skip_step(models: Models, sizes: Sizes, device: Device, length: int, first: bool) -> Step:
    shape = sizes.llm
    flops = shape.layers * prefill_skip.layer_flops(shape, length)
    estimate = (BUILD_S if first else 0.0) + seconds_for(flops, 3 * (1 + sizes.rounds), FORWARD_S)

    def run() -> dict:
        model, built = models.get(
            "llm",
            lambda: builders.causal_lm("llama", **asdict(shape), max_positions=max(sizes.lengths)),
        )
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(3, shape.vocab, (1, length), generator=generator).to(device.name)
        pruners = prefill_skip.methods(shape)
        failures: dict[str, str] = {}
        seconds, recorded = common.prefill_timings(
            model,
            lambda: model(input_ids=ids, logits_to_keep=1, use_cache=True),
            pruners,
            sizes.rounds,
            device.clock,
            peak_memory=True,
            meter=device.meter,
            failures=failures,
        )
        if "unpruned" in failures:
            raise RuntimeError(f"the unpruned prefill failed: {failures['unpruned']}")
        ttft = medians(seconds)
        base_time = ttft["unpruned"]
        base_flops = shape.layers * prefill_skip.layer_flops(shape, length)
        rows = []
        for method, pruner in pruners.items():
            if method in failures:
                print(f"    {method}: error ({failures[method]})")
                rows.append(failed(failures[method], method=method))
                continue
            runs = recorded[method]
            counts = prefill_skip.tokens_per_layer(method, pruner, tp.RunStats(runs.records), shape, length)
            ideal = base_flops / sum(prefill_skip.layer_flops(shape, n) for n in counts)
            speedup = base_time / ttft[method]
            rows.append(
                {
                    "method": method,
                    "ttft_s": ttft[method],
                    "speedup": speedup,
                    "ideal": ideal,
                    "ratio": speedup / ideal,
                    "selection_pct": 100 * statistics.median(runs.selection) / base_time,
                    "peak_mb": max(runs.peak_mb),
                    "tokens_per_layer": counts,
                    "status": "ok",
                }
            )
        return {**built, "rows": rows}

    title = (
        f"Prefill skipping, Llama-3-8B shape ({shape.layers}x{shape.hidden}, {shape.kv_heads} KV heads): "
        f"a {length:,}-token prompt"
    )
    return Step(f"prefill-skip-{length}", title, estimate, run)


def selection_step(sizes: Sizes, device: Device) -> Step:
    d = sizes.selection_dim
    estimate = sum(
        seconds_for(2 * n * n * d, 1 + sizes.rounds, FORWARD_S + 4 * LAUNCH_S * kept)
        for n, kept in sizes.selection
    )

    def run() -> dict:
        generator = torch.Generator().manual_seed(0)
        configs, peaks = {}, {}
        for n, kept in sizes.selection:
            tokens = VisualTokens(
                torch.randn(n, d, generator=generator).to(device.name, device.dtype), grid=(n,)
            )
            configs[f"{n}"] = partial(tp.DivPrune(kept).select, tokens)

        @contextmanager
        def metered(name: str):
            with torch.no_grad(), device.meter() as memory:
                yield
            peaks.setdefault(name, []).append(memory.extra_mb)

        seconds = interleaved(configs, sizes.rounds, clock=device.clock, setup=metered)
        rows = [
            {
                "tokens": n,
                "kept": kept,
                "dim": d,
                "seconds": statistics.median(seconds[f"{n}"]),
                "peak_mb": max(peaks[f"{n}"]),
                "status": "ok",
            }
            for n, kept in sizes.selection
        ]
        return {"rows": rows}

    title = f"DivPrune selection alone (features of width {d}, {str(device.dtype).removeprefix('torch.')})"
    return Step("divprune-selection", title, estimate, run)


def plan(sizes: Sizes, device: Device) -> list[Step]:
    """The steps in the order they run: the cheap, most asked-for ones first."""
    models = Models(device)
    steps = [llava_step(models, sizes, device)]
    steps += [qwen_step(models, sizes, device, g, first=i == 0) for i, g in enumerate(sizes.qwen)]
    steps.append(selection_step(sizes, device))
    steps += [
        prefill_skip_step(models, sizes, device, length, first=i == 0)
        for i, length in enumerate(sizes.lengths)
    ]
    return steps


def estimated_seconds(steps: list[Step]) -> float:
    return STARTUP_S + sum(step.estimate_s for step in steps)


def finite(value):
    """JSON without NaN: an unknown number is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def number(value, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def budget_text(budget) -> str:
    return "-" if budget is None else f"{budget:g}"


def visual_table(result: dict) -> list[str]:
    base = result["unpruned"]
    lines = [
        "| pruner | stage | budget | tokens | TTFT (ms) | tower (ms) | speedup | FLOP-ideal | speedup/ideal "
        "| tower-aware ideal | speedup/tower-aware | selection % | peak extra MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| unpruned | - | - | {base['tokens']} | {base['prefill_s'] * 1e3:.1f} | {base['tower_s'] * 1e3:.1f} "
        f"| 1.00 | 1.00 | 1.00 | 1.00 | 1.00 | 0.00 | {base['peak_mb']:.0f} |",
    ]
    for r in result["rows"]:
        if r["status"] != "ok":
            lines.append(
                f"| {r['pruner']} | {r['stage']} | {budget_text(r.get('budget'))} | {r['status']}: "
                f"{escape(r['reason'])} |||||||||"
            )
            continue
        lines.append(
            f"| {r['pruner']} | {r['stage']} | {r['budget']:g} | {r['tokens']} | {r['prefill_s'] * 1e3:.1f} | "
            f"{r['tower_s'] * 1e3:.1f} | {r['speedup']:.2f} | {number(r['ideal'])} | {number(r['ratio'])} | "
            f"{number(r['tower_aware_ideal'])} | {number(r['tower_aware_ratio'])} | {r['selection_pct']:.2f} | "
            f"{r['peak_mb']:.0f} |"
        )
    return lines


def prefill_skip_table(result: dict) -> list[str]:
    lines = [
        "| method | TTFT (ms) | speedup | FLOP-ideal | speedup/ideal | selection % | peak extra MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | {r['status']}: {escape(r['reason'])} ||||||")
            continue
        lines.append(
            f"| {r['method']} | {r['ttft_s'] * 1e3:.1f} | {r['speedup']:.2f} | {r['ideal']:.2f} | "
            f"{r['ratio']:.2f} | {r['selection_pct']:.2f} | {r['peak_mb']:.0f} |"
        )
    return lines


def selection_table(result: dict) -> list[str]:
    lines = ["| tokens | kept | time (ms) | peak extra MiB |", "|---:|---:|---:|---:|"]
    lines += [
        f"| {r['tokens']} | {r['kept']} | {r['seconds'] * 1e3:.2f} | {r['peak_mb']:.0f} |"
        for r in result["rows"]
    ]
    return lines


TABLES = {
    "llava": visual_table,
    "qwen": visual_table,
    "divprune": selection_table,
    "prefill": prefill_skip_table,
}


def escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(suite: dict, steps: list[dict]) -> str:
    lines = [
        "# GPU benchmark suite",
        "",
        f"{suite['device']}; torch {suite['torch']}, transformers {suite['transformers']}, "
        f"{suite['dtype']} random weights; median of {suite['rounds']} interleaved rounds after one warm-up "
        f"run of every config ({suite['clock']}). Started {suite['started']}; "
        f"{suite['elapsed_s']:.0f} s of an estimated {suite['estimate_s']:.0f} s "
        f"(limit {suite['max_minutes']:g} min).",
    ]
    for step in steps:
        lines += ["", f"## {step['title']}", ""]
        if step["status"] != "done":
            lines.append(f"{step['status']}: {escape(step.get('reason', ''))}")
            continue
        if "build_s" in step:
            lines += [
                f"Model built in {step['build_s']:.1f} s ({step['weights_gib']:.1f} GiB of weights).",
                "",
            ]
        lines += TABLES[step["name"].split("-")[0]](step)
    return "\n".join(lines) + "\n"


def write(out: Path, stem: str, suite: dict, steps: list[dict]) -> None:
    suite = {**suite, "elapsed_s": time.monotonic() - STARTED}
    common.write_json(out / f"{stem}.json", finite({"suite": suite, "steps": steps}))
    (out / f"{stem}.md").write_text(markdown(suite, steps))


def run_steps(steps: list[Step], suite: dict, out: Path, stem: str, limit_s: float) -> list[dict]:
    """Run `steps` in order, skipping those that would end past `limit_s` seconds after the suite
    started; the results are rewritten after every step."""
    results = [
        {"name": s.name, "title": s.title, "estimate_s": s.estimate_s, "status": "pending"} for s in steps
    ]
    write(out, stem, suite, results)
    spent = estimated = 0.0
    for i, (step, result) in enumerate(zip(steps, results)):
        elapsed = time.monotonic() - STARTED
        # later steps run as much over their estimate as the finished ones did
        expected = step.estimate_s * max(1.0, spent / estimated if estimated else 1.0)
        prefix = f"[{elapsed:6.1f} s] {i + 1}/{len(steps)} {step.name}"
        if elapsed + expected > limit_s:
            result.update(
                status="skipped",
                reason=f"would end past the limit: {elapsed:.0f} s elapsed + {expected:.0f} s expected > {limit_s:.0f} s",
            )
            print(f"{prefix}: skipped ({result['reason']})", flush=True)
            write(out, stem, suite, results)
            continue
        print(f"{prefix}: {step.title} (expected {expected:.0f} s)", flush=True)
        started = time.monotonic()
        try:
            result.update(step.run(), status="done")
        except Exception as error:
            result.update(status="error", reason=f"{type(error).__name__}: {error}"[:1000])
            print(f"    error: {result['reason']}", flush=True)
        result["seconds"] = time.monotonic() - started
        spent += result["seconds"]
        estimated += step.estimate_s
        ok = sum(row.get("status") == "ok" for row in result.get("rows", []))
        print(f"    {result['status']} in {result['seconds']:.1f} s; {ok} rows measured", flush=True)
        write(out, stem, suite, results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=common.RESULTS, help="folder for gpu_suite.json and .md")
    parser.add_argument(
        "--runs", type=int, help="timed rounds over all configs of a step (default 5; smoke 1)"
    )
    parser.add_argument("--max-minutes", type=float, default=8.0, help="skip steps that would end later")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the suite runs")
    parser.add_argument("--plan", action="store_true", help="print the steps and their estimates only")
    parser.add_argument(
        "--dtype",
        choices=["bfloat16", "float16", "float32"],
        help="of weights and inputs (default bfloat16; smoke float32: the CPU multiplies bfloat16 slowly)",
    )
    args = parser.parse_args(argv)
    use_source_tree()
    sizes = SMOKE if args.smoke else FULL
    if args.runs is not None:
        sizes = replace(sizes, rounds=args.runs)
    dtype = getattr(torch, args.dtype or ("float32" if args.smoke else "bfloat16"))
    device = cpu_device(dtype) if args.smoke or args.plan else cuda_device(dtype)
    steps = plan(sizes, device)
    total = estimated_seconds(steps)
    print(
        f"estimated GPU duration: {total:.0f} s ({total / 60:.1f} min) for {len(steps)} steps, at "
        f"{TFLOPS:.0f} TFLOP/s sustained bf16 + {FORWARD_S * 1e3:.0f} ms per prefill + {BUILD_S:.0f} s per "
        f"model + {STARTUP_S:.0f} s start-up; limit {args.max_minutes:g} min"
    )
    for step in steps:
        print(f"  {step.name:<22} {step.estimate_s:6.1f} s  {step.title}")
    if args.plan:
        return 0
    import transformers

    suite = {
        "device": device.description,
        "smoke": args.smoke,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": str(device.dtype).removeprefix("torch."),
        "clock": "CUDA events" if device.name == "cuda" else "process CPU time",
        "rounds": sizes.rounds,
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "estimate_s": total,
        "max_minutes": args.max_minutes,
        "assumed_tflops": TFLOPS,
    }
    stem = "gpu_suite_smoke" if args.smoke else "gpu_suite"
    results = run_steps(steps, suite, args.out, stem, 60 * args.max_minutes)
    print(f"\nwritten to {args.out / stem}.json and .md\n")
    print(markdown({**suite, "elapsed_s": time.monotonic() - STARTED}, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
