"""Accuracy-vs-budget evaluation: every (pruner, budget) pair answers the same questions as the
unpruned model; results per question type and per image region of the answer, with the time to
answer relative to the unpruned model (interleaved timing, `tokenprune.timing`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import tokenprune as tp
from tokenprune import registry, timing


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
    for attribute in ("layer", "layers_at", "schedule", "filter_layer"):
        if hasattr(pruner, attribute) and not callable(getattr(pruner, attribute)):
            return f"{attribute}={getattr(pruner, attribute)}"
    return ""


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


def evaluate(
    model,
    decode: Callable[[torch.Tensor], str],
    examples: list[Example],
    configs: Iterable[tuple[str, float | None, object]],
    progress: bool = True,
) -> list[Result]:
    """Run every (name, budget, pruner) config (pruner None = unpruned) over `examples`.

    Time to answer comes from `tokenprune.timing.interleaved`, one round per question: every config
    answers it in turn (after one untimed answer each), so load that changes during a long evaluation
    falls on all configs alike. Speedup = unpruned seconds / the config's, summed over the questions."""
    from tqdm.auto import tqdm

    configs = list(configs)
    keys = [str(index) for index in range(len(configs))]  # (name, budget) pairs need not be unique
    pruners = {key: pruner for key, (_, _, pruner) in zip(keys, configs)}
    bar = tqdm(total=len(configs) * (len(examples) + 1), disable=not progress, unit="answer")
    answered: dict[str, list[bool]] = {key: [] for key in keys}

    def answering(key: str) -> Callable[[], None]:
        questions = iter([examples[0], *examples])  # the warm-up answers the first question

        def answer_next() -> None:
            answered[key].append(is_answered(model, decode, next(questions)))
            bar.update()

        return answer_next

    @contextmanager
    def pruned(key: str):
        if pruners[key] is None:
            yield
            return
        with tp.apply(model, pruners[key]):
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
        results.append(
            Result(
                name,
                budget,
                sum(flat) / len(flat),
                seconds=sum(seconds[key]),
                per_type=_shares(correct),
                per_region=_shares(by_region),
                setting=setting,
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
    head = ["pruner", "budget", "accuracy", "% of unpruned", "speedup (min-max)", *kinds, "setting"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [
            r.pruner,
            "-" if r.budget is None else f"{r.budget:g}",
            f"{r.accuracy:.3f}",
            "-" if r.relative is None else f"{100 * r.relative:.1f}%",
            _speedup_cell(r),
            *(f"{r.breakdown(by).get(kind, float('nan')):.3f}" for kind in kinds),
            r.setting,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _speedup_cell(r: Result) -> str:
    if r.speedup is None:
        return "-"
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
