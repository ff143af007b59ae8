"""Token budgets: an absolute count or a fraction of what is available."""

from __future__ import annotations

import math
import numbers


def validate_budget(budget: object, name: str = "budget") -> int | float:
    """Check a budget once, at construction: a positive int, or a float fraction in (0, 1]."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise TypeError(
            f"{name} must be an int (tokens) or a float fraction in (0, 1], got {type(budget).__name__}"
        )
    if isinstance(budget, numbers.Integral):
        if budget <= 0:
            raise ValueError(f"{name} must be a positive number of tokens, got {budget}")
        return int(budget)
    value = float(budget)
    if math.isnan(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} as a fraction must lie in (0, 1], got {budget}")
    return value


def resolve_budget(budget: int | float, available: int) -> int:
    """Number of tokens to keep out of `available`: never more than available, at least one."""
    if available <= 0:
        return 0
    if isinstance(budget, int):
        return min(budget, available)
    return min(available, max(1, round(budget * available)))
