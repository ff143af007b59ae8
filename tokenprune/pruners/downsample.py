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


@dataclass(init=False)
class Downsample(PreLLMPruner):
    """Average-pool the projected visual tokens in `factor` x `factor` cells of the patch grid (per
    frame for video, per view for anyres images): ceil(h / factor) * ceil(w / factor) tokens per
    view, each at the position of its cell's middle token. The plain-resizing baseline pruners are
    measured against; factor 1 keeps every token unchanged. Its token count follows from the grid, so
    it has no budget of its own (`budget` reads 1.0)."""

    budget: int | float = field(init=False, default=1.0)
    factor: int = 2

    def __init__(self, factor: int = 2, positions: Positions = "keep") -> None:
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be an int >= 1, got {factor!r}")
        self.factor = factor
        self.budget = 1.0
        self.positions = positions
        self.__post_init__()

    def with_budget(self, budget: int | float) -> Downsample:
        return self

    def count(self, grid: tuple[int, ...]) -> int:
        """Tokens kept of one view (grid)."""
        frames, height, width = _frames_height_width(grid)
        return frames * math.ceil(height / self.factor) * math.ceil(width / self.factor)

    def select(self, tokens: VisualTokens) -> Selection:
        n = len(tokens)
        if self.factor == 1:
            return Selection(torch.arange(n, device=tokens.features.device))
        views = getattr(tokens, "views", ()) or (tokens.grid,)
        indices, features, start = [], [], 0
        for view in views:
            size = math.prod(view)
            spot, pooled = pool_view(tokens.features[start : start + size], view, self.factor)
            indices.append(spot + start)
            features.append(pooled)
            start += size
        return Selection(torch.cat(indices), torch.cat(features))
