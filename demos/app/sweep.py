"""Sweep tab: accuracy and time to answer vs budget through `tokenprune.eval`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tokenprune.demos.app.checks import PROMPT_PRUNERS, VISUAL_PRUNERS, check_names
from tokenprune.demos.app.models import Loaded
from tokenprune.demos.app.vision import vision_prompt
from tokenprune.eval import harness


@dataclass
class SweepResult:
    table: str  # markdown
    plot: Path  # accuracy vs budget (tokenprune.eval's plot)
    points: list[dict]  # pruner, budget, accuracy, speedup


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
    harness.plot(results, plot, f"{task}: {loaded.name}, {len(examples)} questions")
    points = [
        {"pruner": r.pruner, "budget": r.budget, "accuracy": r.accuracy, "speedup": r.speedup}
        for r in results
        if r.budget is not None
    ]
    return SweepResult(harness.markdown(results), plot, points)
