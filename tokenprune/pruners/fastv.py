"""In-LLM visual pruning by last-token attention: FastV and its FEATHER fix."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokenprune.attention import head_mean_probabilities
from tokenprune.pruners.base import LayerContext
from tokenprune.pruners.scored import ScoredLayerPruner, TokenGroup


def _original_size(group: TokenGroup) -> int:
    return math.prod(group.grid) if group.grid else len(group.positions)


@dataclass
class FastV(ScoredLayerPruner):
    """After decoder layer `layer - 1`, keep the image tokens the last token attends to most
    (RoPE-applied attention, softmax over all keys, mean over heads), as FastV's code does."""

    layer: int = 2

    def layers(self) -> tuple[int, ...]:
        return (self.layer,)

    def layer_scores(self, ctx: LayerContext) -> torch.Tensor:
        return head_mean_probabilities(ctx.attention.logits(window=1, rope=True))

    def group_keep(self, ctx: LayerContext, group: TokenGroup) -> int:
        return self.keep_count(_original_size(group))


@dataclass
class Feather(ScoredLayerPruner):
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

    def layer_scores(self, ctx: LayerContext) -> torch.Tensor:
        # logits, not probabilities: each group takes its softmax over its own keys
        return ctx.attention.logits(window=1, rope=False)

    def group_scores(self, layer_scores: torch.Tensor, group: TokenGroup) -> torch.Tensor:
        b = group.sample
        return head_mean_probabilities(layer_scores[b : b + 1, :, :, group.positions])[0]

    def group_keep(self, ctx: LayerContext, group: TokenGroup) -> int:
        later_stages = len(self.layers_at) - 1 - ctx.step
        final = self.keep_count(_original_size(group))
        return min(len(group.positions), math.ceil(final / self.stage_ratio**later_stages))

    def keep_group(
        self, ctx: LayerContext, group: TokenGroup, scores: torch.Tensor, count: int
    ) -> torch.Tensor:
        if ctx.step > 0:
            return super().keep_group(ctx, group, scores, count)
        # first stage: the uniform grid comes first, spread evenly if it alone fills the count
        uniform = self._uniform(group.origins, group.grid)
        if len(uniform) >= count:
            pick = torch.linspace(0, len(uniform) - 1, count).add(0.5).floor().long()
            return uniform[pick.to(uniform.device)]
        scores = scores.clone()
        scores[uniform] = float("inf")
        return super().keep_group(ctx, group, scores, count)
