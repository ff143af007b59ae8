"""Images made of several views (an anyres image's base view and high-resolution crop canvas; a
video's frames), and a wrapper that splits a budget between the views."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from tokenprune.pruners.base import Positions, PreLLMPruner, Selection, VisualTokens


@dataclass
class ViewTokens(VisualTokens):
    """VisualTokens whose tokens are several views one after another. views: each view's own grid
    (row-major), in token order; sum of their sizes == N. `grid` still describes the whole group."""

    views: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        if sum(math.prod(v) for v in self.views) != self.features.shape[0]:
            raise ValueError(f"views {self.views} do not add up to {self.features.shape[0]} tokens")


def split_by_size(keep: int, sizes: list[int]) -> list[int]:
    """Split `keep` tokens in proportion to `sizes` (largest remainders first); sums to `keep`."""
    total = sum(sizes)
    exact = [keep * s / total for s in sizes]
    shares = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: keep - sum(shares)]:
        shares[i] += 1
    return shares


@dataclass
class SplitByArea(PreLLMPruner):
    """Give each view of an image its share of the image's budget, in proportion to its token count,
    and let `pruner` select inside each view on that view's own grid.

    For an anyres image this keeps the base view and the crop canvas in fixed proportion; for a video
    (views = frames) it is a per-frame budget. Tokens without views are one view. The image's budget
    (`pruner.budget`) and the exact total kept are unchanged.
    """

    budget: int | float = field(init=False)
    positions: Positions = field(init=False)
    pruner: PreLLMPruner | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pruner, PreLLMPruner):
            raise TypeError(
                f"SplitByArea wraps a pre-LLM pruner (e.g. DivPrune), got {type(self.pruner).__name__}"
            )
        self.budget, self.positions = self.pruner.budget, self.pruner.positions
        self.needs = self.pruner.needs
        super().__post_init__()

    @property
    def name(self) -> str:
        return f"SplitByArea({self.pruner.name})"

    def with_budget(self, budget: int | float) -> SplitByArea:
        return replace(self, pruner=self.pruner.with_budget(budget))

    def select(self, tokens: VisualTokens) -> Selection:
        views = getattr(tokens, "views", ()) or (tokens.grid,)
        sizes = [math.prod(v) for v in views]
        shares = split_by_size(self.keep_count(len(tokens)), sizes)
        indices, features = [], []
        merged = False
        start = 0
        for view, size, share in zip(views, sizes, shares):
            span = slice(start, start + size)
            if share:
                part = VisualTokens(
                    features=tokens.features[span],
                    grid=view,
                    attention=tokens.attention[span] if tokens.attention is not None else None,
                    keys=tokens.keys[span] if tokens.keys is not None else None,
                    pre_projection=tokens.pre_projection[span] if tokens.pre_projection is not None else None,
                    project=tokens.project,
                    text=tokens.text,
                )
                selection = self.pruner.with_budget(share).select(part)
                indices.append(selection.indices + start)
                merged |= selection.features is not None
                features.append(
                    selection.features if selection.features is not None else part.features[selection.indices]
                )
            start += size
        return Selection(torch.cat(indices), torch.cat(features) if merged else None)
