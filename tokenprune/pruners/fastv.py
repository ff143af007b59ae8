"""In-LLM visual pruning by last-token attention: FastV and its FEATHER fix."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokenprune.attention import head_mean_probabilities
from tokenprune.pruners.base import LayerContext, LayerPruner


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return scores.topk(min(k, scores.numel())).indices.sort().values


def _original_size(grid: tuple[int, ...] | None, current: int) -> int:
    return math.prod(grid) if grid else current


@dataclass
class FastV(LayerPruner):
    """After decoder layer `layer - 1`, keep the image tokens the last token attends to most
    (RoPE-applied attention, softmax over all keys, mean over heads), as FastV's code does."""

    layer: int = 2

    def layers(self) -> tuple[int, ...]:
        return (self.layer,)

    def select_layer(self, ctx: LayerContext) -> list[list[torch.Tensor]]:
        scores = head_mean_probabilities(ctx.attention.logits(window=1, rope=True))
        return [
            [
                _top(scores[b, positions], self.keep_count(_original_size(grid, len(positions))))
                for positions, grid in zip(groups, ctx.grids[b])
            ]
            for b, groups in enumerate(ctx.groups)
        ]


@dataclass
class Feather(LayerPruner):
    """FEATHER: last-token attention computed without RoPE (RoPE's decay makes FastV drop the top of
    the image), softmax over the image's keys only, plus a uniform grid for coverage at the first
    stage. Stage i of n keeps budget / stage_ratio**(n - 1 - i) tokens; the last keeps `budget`."""

    layers_at: tuple[int, ...] = (8, 16)
    stage_ratio: float = 0.3
    uniform_stride: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        self.layers_at = tuple(self.layers_at)
        if not self.layers_at:
            raise ValueError("Feather needs at least one layer in layers_at")
        if not 0.0 < self.stage_ratio <= 1.0:
            raise ValueError(f"stage_ratio must lie in (0, 1], got {self.stage_ratio}")
        if self.uniform_stride < 1:
            raise ValueError(f"uniform_stride must be >= 1, got {self.uniform_stride}")

    def layers(self) -> tuple[int, ...]:
        return self.layers_at

    def _uniform(self, origins: torch.Tensor, grid: tuple[int, ...] | None) -> torch.Tensor:
        if not grid:
            return (origins % self.uniform_stride == 0).nonzero().squeeze(1)
        width = grid[-1]
        row, col = (origins // width) % grid[-2], origins % width
        on_grid = (row % self.uniform_stride == 0) & (col % self.uniform_stride == 0)
        return on_grid.nonzero().squeeze(1)

    def select_layer(self, ctx: LayerContext) -> list[list[torch.Tensor]]:
        logits = ctx.attention.logits(window=1, rope=False)
        later_stages = len(self.layers_at) - 1 - ctx.step
        kept: list[list[torch.Tensor]] = []
        for b, groups in enumerate(ctx.groups):
            per_group = []
            for positions, origins, grid in zip(groups, ctx.origins[b], ctx.grids[b]):
                final = self.keep_count(_original_size(grid, len(positions)))
                k = min(len(positions), math.ceil(final / self.stage_ratio**later_stages))
                scores = head_mean_probabilities(logits[b : b + 1, :, :, positions])[0]
                if ctx.step > 0:
                    per_group.append(_top(scores, k))
                    continue
                uniform = self._uniform(origins, grid)
                if len(uniform) >= k:
                    pick = torch.linspace(0, len(uniform) - 1, k).add(0.5).floor().long()
                    per_group.append(uniform[pick.to(uniform.device)])
                    continue
                scores = scores.clone()
                scores[uniform] = float("inf")
                per_group.append(_top(scores, k))
            kept.append(per_group)
        return kept
