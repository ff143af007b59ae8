"""Sweep tab: accuracy and time to answer vs budget through `tokenprune.eval`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tokenprune.demos.app.checks import PROMPT_PRUNERS, VISUAL_PRUNERS, check_names
from tokenprune.demos.app.models import Loaded
from tokenprune.demos.app.vision import vision_prompt
from tokenprune.eval import harness

# The figure fills the page's width at 1400 px without shrinking, its smallest text at FONT_PT.
FIGURE_INCHES = (13.0, 4.2)
DPI = 100
FONT_PT = 12


@dataclass
class SweepResult:
    table: str  # markdown, accuracy by question type
    plot: Path  # accuracy and speedup vs budget
    points: list[dict]  # pruner, budget, accuracy, speedup, slowest and fastest question's speedup


def parse_budgets(text) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"Budgets are comma-separated fractions such as 0.1,0.25,0.5; got {text!r}."
        ) from None
    if not values or not all(0.0 < v <= 1.0 for v in values):
        raise ValueError(f"Budgets are fractions in (0, 1]; got {text!r}.")
    return values


def run_sweep(loaded: Loaded, task: str, pruners, budgets, questions: int, out_dir: Path) -> SweepResult:
    """Accuracy and time to answer vs budget on held-out toy questions, through `tokenprune.eval`
    (its tqdm bar drives the app's progress bar)."""
    from tokenprune.eval import data

    if task not in ("vision", "long context"):
        raise ValueError(f"Unknown task {task!r}; pick vision or long context.")
    supported = VISUAL_PRUNERS if task == "vision" else PROMPT_PRUNERS
    names = check_names(pruners, supported)
    budgets = parse_budgets(budgets)
    questions = int(questions)
    if questions < 1:
        raise ValueError(f"Evaluate at least one question, got {questions}.")
    if task == "vision":
        prompt = vision_prompt(loaded.processor, "{question}")
        examples = data.vlm_examples(loaded.processor, "toy", questions, prompt=prompt)
        build = harness.visual_pruner
    else:
        examples = data.lm_examples(loaded.tokenizer, "toy", questions, lengths=(512, 1024))
        build = harness.prompt_pruner
    configs = [("unpruned", None, None)] + [
        (name, budget, build(name, budget, loaded.depth)) for name in names for budget in budgets
    ]
    results = harness.evaluate(
        loaded.model, lambda ids: loaded.tokenizer.decode(ids, skip_special_tokens=True), examples, configs
    )
    plot = Path(out_dir) / f"sweep_{task.replace(' ', '_')}_{time.time_ns()}.png"
    sweep_figure(results, plot, f"{task}: {loaded.name}, {len(examples)} questions")
    points = [
        {
            "pruner": r.pruner,
            "budget": r.budget,
            "accuracy": r.accuracy,
            "speedup": r.speedup,
            "speedup min": r.speedup_range[0],
            "speedup max": r.speedup_range[1],
        }
        for r in results
        if r.budget is not None
    ]
    return SweepResult(harness.markdown(results), plot, points)


def sweep_figure(results: list[harness.Result], path: Path, title: str) -> None:
    """Two panels side by side: accuracy vs budget over all questions (unpruned dashed), and the
    time-to-answer speedup with bars from the slowest to the fastest single question."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(r for r in results if r.pruner == "unpruned")
    names = list(dict.fromkeys(r.pruner for r in results if r.budget is not None))
    with plt.rc_context({"font.size": FONT_PT}):
        figure, (accuracy, speed) = plt.subplots(1, 2, figsize=FIGURE_INCHES)
        for name in names:
            runs = sorted((r for r in results if r.pruner == name), key=lambda r: r.budget)
            budgets = [r.budget for r in runs]
            accuracy.plot(budgets, [r.accuracy for r in runs], marker="o", label=name)
            low = [r.speedup - r.speedup_range[0] for r in runs]
            high = [r.speedup_range[1] - r.speedup for r in runs]
            speed.errorbar(
                budgets, [r.speedup for r in runs], yerr=[low, high], marker="o", capsize=4, label=name
            )
        accuracy.axhline(base.accuracy, color="black", linestyle="--", label="unpruned")
        speed.axhline(1.0, color="black", linestyle="--", label="unpruned")
        accuracy.set(title="accuracy, all questions", ylabel="accuracy", ylim=(0, 1.02))
        speed.set(title="time to answer: speedup (bars: min-max over questions)", ylabel="speedup")
        for ax in (accuracy, speed):
            ax.set_xlabel("budget (fraction of tokens kept)")
            ax.grid(alpha=0.3)
        speed.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        figure.suptitle(title)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=DPI)
        plt.close(figure)
