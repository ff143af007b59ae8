"""FoPru: vision-encoder attention significance, ranked globally or by rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from tokenprune.pruners.adaptive import Ranking
from tokenprune.pruners.base import PreLLMPruner, Selection, VisualTokens

STRATEGIES = ("rank", "row")


@dataclass
class FoPru(PreLLMPruner):
    """strategy="rank": global top-k by significance. strategy="row": whole grid rows in order of
    their total significance (local continuity), the last row filled by its best tokens so the count
    is exact. Kept tokens always return in original order."""

    strategy: Literal["rank", "row"] = "rank"

    needs: ClassVar[frozenset[str]] = frozenset({"attention"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")

    def rank(self, tokens: VisualTokens, limit: int, until: tuple[str, float] | None = None) -> Ranking:
        """The `limit` most significant tokens, most significant first, their significance the gains
        (Adaptive's mass rule then keeps a share of the attention mass). Ranks as strategy="rank".
        `until` (Adaptive's rule and target) is not needed: one sort ranks them all."""
        if tokens.attention is None:
            raise ValueError("FoPru needs vision-tower attention; this adapter did not provide it")
        score = tokens.attention.float()
        top = score.topk(limit)
        return Ranking(top.indices, top.values.clamp(min=0), float(score.clamp(min=0).sum()))

    def select(self, tokens: VisualTokens) -> Selection:
        if tokens.attention is None:
            raise ValueError("FoPru needs vision-tower attention; this adapter did not provide it")
        score = tokens.attention.float()
        keep = self.keep_count(len(tokens))
        if self.strategy == "rank":
            return Selection(score.topk(keep).indices.sort().values)
        width = tokens.grid[-1]
        rows = score.view(-1, width)
        chosen: list[torch.Tensor] = []
        remaining = keep
        for row in rows.sum(dim=1).argsort(descending=True).tolist():
            if remaining == 0:
                break
            take = min(width, remaining)
            local = (
                torch.arange(width, device=score.device) if take == width else rows[row].topk(take).indices
            )
            chosen.append(local + row * width)
            remaining -= take
        return Selection(torch.cat(chosen).sort().values)
