"""Composition of pruners acting at different stages of one forward pass."""

from __future__ import annotations

from dataclasses import dataclass

from tokenprune.pruners.base import Pruner

# Stages in the order a forward pass reaches them. "in_tower" prunes between the vision tower's blocks;
# "prefill" is for methods that choose the prompt tokens the language model prefills (GemFilter-style
# select-then-rerun).
STAGE_ORDER = ("in_tower", "pre_llm", "prefill", "llm")


@dataclass(frozen=True)
class Composed:
    """Pruners in forward order, at most one per stage."""

    stages: tuple[Pruner, ...]

    def at(self, stage: str) -> Pruner | None:
        return next((p for p in self.stages if p.stage == stage), None)

    @property
    def positions(self) -> str:
        return self.stages[0].positions


def compose(*pruners: Pruner) -> Composed:
    """`compose(DivPrune(128), FastV(64))`: select before the LLM, then again inside it.

    Stats carry one record per stage. All stages must agree on `positions`.
    """
    if not pruners:
        raise ValueError("compose() needs at least one pruner")
    for p in pruners:
        if isinstance(p, Composed):
            raise TypeError("compose() takes pruners, not composed pruners; list the stages directly")
        if not isinstance(p, Pruner) or getattr(p, "stage", None) not in STAGE_ORDER:
            raise TypeError(f"compose() takes tokenprune pruners, got {type(p).__name__}")
    ranks = [STAGE_ORDER.index(p.stage) for p in pruners]
    if len(set(ranks)) != len(ranks):
        raise ValueError(
            f"compose() takes at most one pruner per stage {STAGE_ORDER}, got stages {[p.stage for p in pruners]}"
        )
    if ranks != sorted(ranks):
        raise ValueError(f"compose(): pruners must be listed in forward order {STAGE_ORDER}")
    if len({p.positions for p in pruners}) > 1:
        raise ValueError("compose(): all stages must use the same positions ('keep' or 'reindex')")
    return Composed(tuple(pruners))


def as_composed(pruner: Pruner | Composed) -> Composed:
    if isinstance(pruner, Composed):
        return pruner
    return compose(pruner)
