"""Downsampling baseline: average-pool the projected token grid."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from tokenprune.pruners.base import Positions, PreLLMPruner, Selection, VisualTokens


def _frames_height_width(grid: tuple[int, ...]) -> tuple[int, int, int]:
    """A 1-D, (h, w) or (t, h, w) grid as (frames, height, width)."""
    return (1, 1, *grid)[-3:] if len(grid) < 3 else grid


def pool_view(
    features: torch.Tensor, grid: tuple[int, ...], factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average `factor` x `factor` cells of a row-major (h, w) grid, per frame of a (t, h, w) one (a
    1-D grid pools runs of `factor`); edge cells are smaller. Returns (representative indices, cell
    means): a cell's representative is its middle token (upper left of the middle for even sizes)."""
    frames, height, width = _frames_height_width(grid)
    device = features.device
    rows, cols = math.ceil(height / factor), math.ceil(width / factor)
    row, col = torch.arange(height, device=device), torch.arange(width, device=device)
    cell_of = ((row // factor)[:, None] * cols + (col // factor)[None, :]).flatten()
    cell_of = (torch.arange(frames, device=device)[:, None] * rows * cols + cell_of[None, :]).flatten()
    sums = torch.zeros(frames * rows * cols, features.shape[1], dtype=torch.float32, device=device)
    sums.index_add_(0, cell_of, features.float())
    sizes = torch.bincount(cell_of, minlength=len(sums))

    def middle(count: int, cells: int) -> torch.Tensor:
        start = torch.arange(cells, device=device) * factor
        return start + (torch.clamp(count - start, max=factor) - 1) // 2

    spot = (middle(height, rows)[:, None] * width + middle(width, cols)[None, :]).flatten()
    spot = (torch.arange(frames, device=device)[:, None] * height * width + spot[None, :]).flatten()
    return spot, (sums / sizes[:, None]).to(features.dtype)


def pooled_count(grid: tuple[int, ...], factor: int) -> int:
    """Tokens `factor` x `factor` pooling leaves of one view (grid)."""
    frames, height, width = _frames_height_width(grid)
    return frames * math.ceil(height / factor) * math.ceil(width / factor)


@dataclass(init=False)
class Downsample(PreLLMPruner):
    """Average-pool the projected visual tokens in `factor` x `factor` cells of the patch grid (per
    frame for video, per view for anyres images): ceil(h / factor) * ceil(w / factor) tokens per
    view, each at the position of its cell's middle token. The plain-resizing baseline pruners are
    measured against; factor 1 keeps every token unchanged.

    Give either `factor`, or a `budget` (tokens or a fraction, keyword): each image then takes the
    smallest factor whose pooled count fits the budget, so it keeps at most (rarely exactly) the
    budget. With a factor, `budget` reads 1.0.
    """

    budget: int | float = field(init=False, default=1.0)
    factor: int | None = 2

    def __init__(
        self, factor: int | None = None, positions: Positions = "keep", *, budget: int | float | None = None
    ) -> None:
        if factor is not None and budget is not None:
            raise ValueError("Downsample takes a factor or a budget, not both")
        if factor is None and budget is None:
            factor = 2
        if factor is not None and (isinstance(factor, bool) or not isinstance(factor, int) or factor < 1):
            raise ValueError(f"factor must be an int >= 1, got {factor!r}")
        self.factor = factor
        self.budget = 1.0 if budget is None else budget
        self.positions = positions
        self.__post_init__()

    def with_budget(self, budget: int | float) -> Downsample:
        return self if self.factor is not None else Downsample(positions=self.positions, budget=budget)

    def factor_for(self, views: tuple[tuple[int, ...], ...]) -> int:
        """The pooling factor of an image of these views (grids)."""
        if self.factor is not None:
            return self.factor
        keep = self.keep_count(sum(math.prod(v) for v in views))
        factor = 1
        while sum(pooled_count(v, factor) for v in views) > keep:
            factor += 1
        return factor

    def count(self, views: tuple[tuple[int, ...], ...]) -> int:
        """Tokens kept of an image of these views (grids)."""
        factor = self.factor_for(views)
        return sum(pooled_count(v, factor) for v in views)

    def select(self, tokens: VisualTokens) -> Selection:
        n = len(tokens)
        views = getattr(tokens, "views", ()) or (tokens.grid,)
        factor = self.factor_for(views)
        if factor == 1:
            return Selection(torch.arange(n, device=tokens.features.device))
        indices, features, start = [], [], 0
        for view in views:
            size = math.prod(view)
            spot, pooled = pool_view(tokens.features[start : start + size], view, factor)
            indices.append(spot + start)
            features.append(pooled)
            start += size
        return Selection(torch.cat(indices), torch.cat(features))
