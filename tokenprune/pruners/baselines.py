"""Baselines every benchmark shows: random and uniformly strided selection."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokenprune.pruners.base import PreLLMPruner, Selection, VisualTokens


@dataclass
class RandomPrune(PreLLMPruner):
    """Keep a uniformly random subset; `seed` makes every call reproducible."""

    seed: int = 0

    def select(self, tokens: VisualTokens) -> Selection:
        n = len(tokens)
        generator = torch.Generator().manual_seed(self.seed)
        keep = torch.randperm(n, generator=generator)[: self.keep_count(n)]
        return Selection(keep.sort().values.to(tokens.features.device))


def _spread(n: int, k: int) -> torch.Tensor:
    """k distinct, evenly spaced integers in [0, n); half-up rounding keeps them distinct."""
    return torch.linspace(0, n - 1, k).add(0.5).floor().long()


def strided_grid(grid: tuple[int, ...], k: int) -> torch.Tensor:
    """k indices spread evenly over a (h, w) grid (row-major); other grids are spread as 1-D."""
    n = math.prod(grid)
    if k >= n:
        return torch.arange(n)
    if len(grid) == 2:
        h, w = grid
        rows = max(1, min(h, round(math.sqrt(k * h / w))))
        cols = min(w, math.ceil(k / rows))
        rows = min(h, math.ceil(k / cols))
        lattice = (_spread(h, rows)[:, None] * w + _spread(w, cols)[None, :]).flatten()
        return lattice[_spread(len(lattice), k)]
    return _spread(n, k)


@dataclass
class UniformPrune(PreLLMPruner):
    """Keep tokens on an evenly strided lattice over the patch grid."""

    def select(self, tokens: VisualTokens) -> Selection:
        k = self.keep_count(len(tokens))
        return Selection(strided_grid(tokens.grid, k).to(tokens.features.device))
