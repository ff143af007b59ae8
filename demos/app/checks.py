"""Checks of what a user enters, shared by the tabs: each raises ValueError with a message for the page."""

from __future__ import annotations

from tokenprune.eval import cli as eval_cli

VISUAL_PRUNERS = eval_cli.pruner_names("vlm")
PROMPT_PRUNERS = eval_cli.pruner_names("lm")


def check_budget(budget) -> float:
    try:
        budget = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"The budget must be a number, got {budget!r}.") from None
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"The budget is the fraction of tokens kept, in (0, 1]; got {budget:g}.")
    return budget


def check_count(value, name: str, low: int, high: int) -> int:
    """A whole number in [low, high]; `name` starts the message ("The scene seed")."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}.") from None
    if not number.is_integer() or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number in {low}-{high}; got {number:g}.")
    return int(number)


def check_names(names, supported: tuple[str, ...]) -> list[str]:
    names = list(names or [])
    if not names:
        raise ValueError(f"Pick at least one pruner ({', '.join(supported)}).")
    unknown = [n for n in names if n not in supported]
    if unknown:
        raise ValueError(f"Unknown pruner(s) {unknown}; supported: {', '.join(supported)}.")
    return names


def check_question(question) -> str:
    if not isinstance(question, str) or not question.strip():
        raise ValueError("Enter a question.")
    return question.strip()
