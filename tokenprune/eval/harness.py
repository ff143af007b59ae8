"""Accuracy-vs-budget evaluation: every (pruner, budget) pair answers the same questions as the
unpruned model; results per question type and per image region of the answer, with the time to
answer relative to the unpruned model (interleaved timing, `tokenprune.timing`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

import tokenprune as tp
from tokenprune import registry, timing
from tokenprune.pruners.base import PreLLMPruner, Selection


@dataclass
class Example:
    """One question: `inputs` are the model's tensors, `answer` the reference words, `region` where in
    the image the answer lies, if known (FastV loses the top of the image: a breakdown by region shows
    it)."""

    inputs: dict
    answer: str
    kind: str
    max_new_tokens: int
    region: str | None = None
    tokens: int | None = None  # the tokens pruners choose from: image tokens (vlm) or prompt (lm)


# how per-question accuracy is grouped: Result.per_type and Result.per_region
BREAKDOWNS = ("type", "region")


@dataclass
class Result:
    pruner: str
    budget: float | None
    accuracy: float
    relative: float | None = None
    speedup: float | None = None
    speedup_range: tuple[float, float] | None = None  # smallest and largest speedup on one question
    seconds: float = 0.0
    per_type: dict[str, float] = field(default_factory=dict)
    per_region: dict[str, float] = field(default_factory=dict)
    setting: str = ""
    # prunable tokens a decoder layer processes, averaged over layers and questions (`tokens_seen`)
    tokens: float | None = None
    kept: list[int] = field(default_factory=list)  # per question: tokens left after the last pruning

    def breakdown(self, by: str) -> dict[str, float]:
        if by not in BREAKDOWNS:
            raise ValueError(f"unknown breakdown {by!r}; supported: {BREAKDOWNS}")
        return self.per_type if by == "type" else self.per_region


# in "tower+pre" pipelines, the in-tower stage keeps this fraction of the image (or the budget, if
# larger) and the next stage selects the final budget among its survivors
TOWER_KEEP = 0.5


def visual_pruner(name: str, budget: float, depth: int):
    """A registered visual pruner at `budget`; FastV and Feather layers are chosen relative to the LM
    depth. "tower+pre" (e.g. "tome+divprune") composes an in-tower pruner keeping TOWER_KEEP of the
    image with a later-stage pruner that takes it to `budget`."""
    if "+" in name:
        first, _, second = name.partition("+")
        if registry.pruner_entry(first).stage != "in_tower" or "+" in second:
            raise ValueError(f"{name!r}: a composed name is an in-tower pruner + one later-stage pruner")
        share = max(TOWER_KEEP, budget)
        # a pre-LLM fraction is of the tokens it receives; in-LLM fractions are of the whole image
        rest = budget / share if registry.pruner_entry(second).stage == "pre_llm" else budget
        return tp.compose(visual_pruner(first, share, depth), visual_pruner(second, rest, depth))
    supported = registry.pruner_names(drops="visual")
    if name not in supported:
        raise ValueError(f"unknown visual pruner {name!r}; supported: {', '.join(supported)}")
    return registry.build(name, budget, depth)


def prompt_pruner(name: str, budget: float, depth: int, filter_layer: int | None = None):
    """A registered prefill pruner keeping `budget` of the prompt. LazySkip scales its default schedule
    so that the last stage keeps `budget` (budget 0.1 is the default schedule); GemFilter selects at
    `filter_layer` (default: `registry.gemfilter_layer(depth)`). The right layer is the model's: the one whose
    heads find the answer (GemFilter's paper picks it per model)."""
    supported = registry.pruner_names(drops="prompt")
    if name not in supported:
        raise ValueError(f"unknown prompt pruner {name!r}; supported: {', '.join(supported)}")
    # filter_layer is a select-then-prefill setting; LazySkip's layers come from its schedule
    if filter_layer is None or registry.pruner_entry(name).stage != "prefill":
        return registry.build(name, budget, depth)
    if not 0 <= filter_layer < depth:
        raise ValueError(f"filter_layer must lie in [0, {depth - 1}] for {depth} layers, got {filter_layer}")
    return registry.build(name, budget, depth, filter_layer=filter_layer)


def describe(pruner) -> str:
    """The settings that differ between runs, for the report."""
    if isinstance(pruner, tp.Composed):
        return "; ".join(filter(None, (describe(stage) for stage in pruner.stages)))
    if isinstance(pruner, tp.Recycle):
        return describe(pruner.pruner)
    if isinstance(pruner, tp.Adaptive):
        return f"target={pruner.target:.8g}"
    for attribute in ("layer", "layers_at", "schedule", "filter_layer"):
        if hasattr(pruner, attribute) and not callable(getattr(pruner, attribute)):
            return f"{attribute}={getattr(pruner, attribute)}"
    return ""


@dataclass
class _Recorder(PreLLMPruner):
    """Keeps every token and records the VisualTokens a pre-LLM pruner needing `needs` would get."""

    budget: float = 1.0
    seen: list = field(default_factory=list)

    def select(self, tokens):
        self.seen.append(tokens)
        return Selection(torch.arange(len(tokens), device=tokens.features.device))


@torch.no_grad()
def visual_tokens(model, examples: list[Example], needs: frozenset[str]) -> list:
    """The VisualTokens (with what `needs` names) that a pre-LLM pruner gets for each image of
    `examples` (one prefill each)."""
    recorder = _Recorder()
    recorder.needs = needs
    with tp.apply(model, recorder):
        for example in examples:
            model(**example.inputs)
    return recorder.seen


def calibrated(model, examples: list[Example], configs: Iterable[tuple[str, float | None, object]]) -> list:
    """`configs` with every `Adaptive` at budget b (also one inside `Recycle`) replaced by the same rule
    capped at the whole image, its target calibrated (`adaptive.calibrate`) so that the images of
    `examples` (read without their answers) keep b on average: the adaptive configurations then
    compare with fixed budgets at the same mean token count."""
    from tokenprune.pruners.adaptive import calibrate

    configs, samples = list(configs), {}
    out = []
    for name, budget, pruner in configs:
        recycled = isinstance(pruner, tp.Recycle)
        adaptive = pruner.pruner if recycled else pruner
        if isinstance(adaptive, tp.Adaptive) and budget is not None:
            needs = frozenset(adaptive.needs)
            if needs not in samples:
                samples[needs] = visual_tokens(model, examples, needs)
            adaptive = calibrate(adaptive.with_budget(1.0), samples[needs], budget)
            pruner = replace(pruner, pruner=adaptive) if recycled else adaptive
        out.append((name, budget, pruner))
    return out


def normalise(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def is_correct(generated: str, answer: str) -> bool:
    """The generated words start with the answer's words (case and punctuation ignored)."""
    expected = normalise(answer)
    return bool(expected) and normalise(generated)[: len(expected)] == expected


@torch.no_grad()
def is_answered(model, decode: Callable[[torch.Tensor], str], example: Example) -> bool:
    """Whether the greedy answer (prefill plus the answer's few decode steps) is correct."""
    length = example.inputs["input_ids"].shape[1]
    output = model.generate(
        **example.inputs, max_new_tokens=example.max_new_tokens, do_sample=False, pad_token_id=None
    )
    return is_correct(decode(output[0, length:]), example.answer)


def tokens_seen(records: Iterable, before: int, depth: int) -> tuple[float, int]:
    """From one prefill's pruning records (batch 1): the prunable tokens each of the `depth` decoder
    layers processes, averaged over the layers, and the tokens left after the last pruning step.
    Pre-LLM and select-then-prefill pruning applies to every layer, or without them the last in-tower
    step's output; in-LLM pruning from its layer on.
    Forwards after the prefill (decoding) add no new selection: only each step's first record counts."""
    first: dict[tuple, int] = {}
    for r in records:
        first.setdefault((r.stage, r.layer, r.group), r.tokens_after)
    # per group, the last step before the LLM: pre-LLM (or select-then-prefill) after in-tower steps,
    # and of in-tower steps the last block's
    entering: dict[int, tuple[tuple[int, int], int]] = {}
    for (stage, layer, group), n in first.items():
        if stage != "llm":
            order = (0, layer or 0) if stage == "in_tower" else (1, 0)
            entering[group] = max(entering.get(group, (order, n)), (order, n))
    count = sum(n for _, n in entering.values()) if entering else before
    from_layer: dict[int, int] = {}
    for (stage, layer, _), n in first.items():
        if stage == "llm":
            from_layer[layer] = from_layer.get(layer, 0) + n
    per_layer = []
    for layer in range(depth):
        count = from_layer.get(layer, count)
        per_layer.append(count)
    return sum(per_layer) / depth, count


def evaluate(
    model,
    decode: Callable[[torch.Tensor], str],
    examples: list[Example],
    configs: Iterable[tuple[str, float | None, object]],
    progress: bool = True,
    depth: int = 1,
) -> list[Result]:
    """Run every (name, budget, pruner) config (pruner None = unpruned) over `examples`; with
    `Example.tokens` known, `Result.tokens` and `Result.kept` count what each config kept over the
    model's `depth` decoder layers.

    Time to answer comes from `tokenprune.timing.interleaved`, one round per question: every config
    answers it in turn (after one untimed answer each), so load that changes during a long evaluation
    falls on all configs alike. Speedup = unpruned seconds / the config's, summed over the questions."""
    from tqdm.auto import tqdm

    configs = list(configs)
    keys = [str(index) for index in range(len(configs))]  # (name, budget) pairs need not be unique
    pruners = {key: pruner for key, (_, _, pruner) in zip(keys, configs)}
    bar = tqdm(total=len(configs) * (len(examples) + 1), disable=not progress, unit="answer")
    answered: dict[str, list[bool]] = {key: [] for key in keys}
    seen: dict[str, list[tuple[float, int]]] = {key: [] for key in keys}
    handles: dict[str, object] = {}

    def answering(key: str) -> Callable[[], None]:
        questions = iter([examples[0], *examples])  # the warm-up answers the first question

        def answer_next() -> None:
            example = next(questions)
            answered[key].append(is_answered(model, decode, example))
            if example.tokens is not None:
                records = handles[key].stats if handles.get(key) is not None else ()
                seen[key].append(tokens_seen(records, example.tokens, depth))
            bar.update()

        return answer_next

    @contextmanager
    def pruned(key: str):
        if pruners[key] is None:
            handles[key] = None
            yield
            return
        with tp.apply(model, pruners[key]) as handle:
            handles[key] = handle
            yield

    seconds = timing.interleaved(
        {key: answering(key) for key in keys},
        len(examples),
        clock=timing.clock_for(torch.get_num_threads()),
        setup=pruned,
    )
    bar.close()
    results = []
    for key, (name, budget, pruner) in zip(keys, configs):
        correct: dict[str, list[bool]] = {}
        by_region: dict[str, list[bool]] = {}
        for example, ok in zip(examples, answered[key][-len(examples) :]):
            correct.setdefault(example.kind, []).append(ok)
            if example.region is not None:
                by_region.setdefault(example.region, []).append(ok)
        flat = [ok for oks in correct.values() for ok in oks]
        setting = "" if pruner is None else describe(pruner)
        # every question, the warm-up's included, knows its token count, or none is reported
        counted = seen[key][1:] if len(seen[key]) == len(examples) + 1 else []
        results.append(
            Result(
                name,
                budget,
                sum(flat) / len(flat),
                seconds=sum(seconds[key]),
                per_type=_shares(correct),
                per_region=_shares(by_region),
                setting=setting,
                tokens=sum(mean for mean, _ in counted) / len(counted) if counted else None,
                kept=[last for _, last in counted],
            )
        )
    if results and results[0].pruner == "unpruned":
        base, accuracy = seconds[keys[0]], results[0].accuracy
        for key, result in zip(keys, results):
            result.relative = result.accuracy / accuracy if accuracy else None
            result.speedup = timing.speedup(base, seconds[key], statistic=sum)
            result.speedup_range = timing.spread(base, seconds[key])
    return results


def _shares(correct: dict[str, list[bool]]) -> dict[str, float]:
    return {group: sum(oks) / len(oks) for group, oks in sorted(correct.items())}


def markdown(results: list[Result], by: str = "type") -> str:
    """The results as a markdown table, accuracy broken down `by` question type or answer region."""
    kinds = sorted({kind for r in results for kind in r.breakdown(by)})
    counted = any(r.tokens is not None for r in results)
    head = ["pruner", "budget", *(["tokens"] if counted else []), "accuracy", "% of unpruned"]
    head += ["speedup (min-max)", *kinds, "setting"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [
            r.pruner,
            "-" if r.budget is None else f"{r.budget:g}",
            *([("-" if r.tokens is None else f"{r.tokens:.1f}")] if counted else []),
            f"{r.accuracy:.3f}",
            "-" if r.relative is None else f"{100 * r.relative:.1f}%",
            _speedup_cell(r),
            *(f"{r.breakdown(by).get(kind, float('nan')):.3f}" for kind in kinds),
            r.setting,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pareto_front(results: list[Result]) -> list[Result]:
    """The results no other result matches in accuracy with as few tokens (and beats in one of them),
    by tokens; results without a token count are left out."""
    counted = [r for r in results if r.tokens is not None]

    def dominated(r: Result) -> bool:
        return any(
            o.tokens <= r.tokens
            and o.accuracy >= r.accuracy
            and (o.tokens < r.tokens or o.accuracy > r.accuracy)
            for o in counted
        )

    return sorted((r for r in counted if not dominated(r)), key=lambda r: (r.tokens, -r.accuracy))


def varying_budgets(results: list[Result]) -> list[Result]:
    """The results whose kept token count differs between questions (adaptive budgets)."""
    return [r for r in results if len(set(r.kept)) > 1]


def budgets_markdown(results: list[Result]) -> str:
    """Distribution over the questions of the tokens left after the last pruning step, one row per
    result whose count varies."""
    head = ["pruner", "budget", "mean", "min", "25 %", "median", "75 %", "max"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in varying_budgets(results):
        q = np.percentile(r.kept, [0, 25, 50, 75, 100])
        cells = [r.pruner, "-" if r.budget is None else f"{r.budget:g}", f"{np.mean(r.kept):.1f}"]
        lines.append("| " + " | ".join(cells + [f"{v:g}" for v in q]) + " |")
    return "\n".join(lines)


def front_markdown(results: list[Result]) -> str:
    head = ["tokens", "accuracy", "pruner", "budget"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in pareto_front(results):
        budget = "-" if r.budget is None else f"{r.budget:g}"
        lines.append(f"| {r.tokens:.1f} | {r.accuracy:.3f} | {r.pruner} | {budget} |")
    return "\n".join(lines)


def _speedup_cell(r: Result) -> str:
    if r.speedup is None:
        return "-"
    if r.speedup_range is None:  # results written before ranges were recorded
        return f"{r.speedup:.2f}x"
    low, high = r.speedup_range
    return f"{r.speedup:.2f}x ({low:.2f}-{high:.2f})"


def write_json(results: list[Result], path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "results": [asdict(r) for r in results]}, indent=2))


def plot(results: list[Result], path: Path, title: str) -> None:
    """Accuracy vs budget, one panel for all questions, one per question type and one per answer
    region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("all", None)] + [
        (group, by) for by in BREAKDOWNS for group in sorted({g for r in results for g in r.breakdown(by)})
    ]

    def accuracy(r: Result, group: str, by: str | None) -> float | None:
        return r.accuracy if by is None else r.breakdown(by).get(group)

    base = next((r for r in results if r.pruner == "unpruned"), None)
    names = list(dict.fromkeys(r.pruner for r in results if r.pruner != "unpruned"))
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False)
    for ax, (group, by) in zip(axes.flat, panels):
        for name in names:
            points = sorted((r.budget, accuracy(r, group, by)) for r in results if r.pruner == name)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        if base is not None:
            ax.axhline(
                accuracy(base, group, by),
                color="black",
                linestyle="--",
                label="unpruned",
            )
        ax.set_title(group)
        ax.set_xlabel("budget (fraction of tokens kept)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (3.3 * rows)))  # room for the title
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_tokens(results: list[Result], path: Path, title: str) -> None:
    """Accuracy vs mean tokens kept (one line per pruner, the Pareto front dashed) and, when some
    result's budget varies per question, the distribution of its kept tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counted = [r for r in results if r.tokens is not None]
    adaptive = varying_budgets(counted)
    figure, axes = plt.subplots(1, 1 + bool(adaptive), figsize=(6.5 + 5 * bool(adaptive), 4.6), squeeze=False)
    ax = axes[0, 0]
    colours = plt.get_cmap("tab20").colors
    for index, name in enumerate(dict.fromkeys(r.pruner for r in counted)):
        points = sorted((r.tokens, r.accuracy) for r in counted if r.pruner == name)
        style = (
            {"marker": "*", "markersize": 12, "color": "black"}
            if name == "unpruned"
            else {"marker": "osD^v"[index % 5], "color": colours[index % len(colours)]}
        )
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name, **style)
    front = pareto_front(counted)
    ax.step(
        [r.tokens for r in front],
        [r.accuracy for r in front],
        where="post",
        color="grey",
        linestyle="--",
        linewidth=2.5,
        alpha=0.6,
        label="Pareto front",
    )
    ax.set_xscale("log")
    ax.set_xlabel("mean visual tokens per decoder layer")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    if adaptive:
        ax = axes[0, 1]
        bins = np.arange(0, max(max(r.kept) for r in adaptive) + 2) - 0.5  # one bin per count
        for r in adaptive:
            label = r.pruner if r.budget is None else f"{r.pruner} {r.budget:g}"
            ax.hist(r.kept, bins=bins, alpha=0.5, label=label)
        ax.set_xlabel("tokens kept per question")
        ax.set_ylabel("questions")
        ax.set_title("chosen budgets")
        ax.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
