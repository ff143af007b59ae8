"""In-LLM pruners that rank tokens: subclasses score each group's tokens and say how many the group
keeps; the base keeps the top-scored ones."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenprune.pruners.base import LayerContext, LayerPruner


def top_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` highest scores (all of them if fewer), ascending."""
    return scores.topk(min(k, scores.numel())).indices.sort().values


@dataclass(frozen=True)
class TokenGroup:
    """One prunable group of sample `sample` before a decoder layer: its current sequence
    `positions`, the same tokens' original indices (`origins`) and its original grid (None for text)."""

    sample: int
    positions: torch.Tensor
    origins: torch.Tensor
    grid: tuple[int, ...] | None


class ScoredLayerPruner(LayerPruner):
    """A LayerPruner that keeps, in every group, the `group_keep` tokens scored highest by
    `group_scores`, in sequence order. Tokens scored +inf are always kept, even past the group's
    count: that is how subclasses protect tokens."""

    def layer_scores(self, ctx: LayerContext) -> torch.Tensor:
        """What `group_scores` reads, computed once per layer for the whole batch (the attention
        logits are recomputed on every call)."""
        raise NotImplementedError

    def group_scores(self, layer_scores: torch.Tensor, group: TokenGroup) -> torch.Tensor:
        """One score per token of `group`; by default `layer_scores` is (B, L) and indexed by position."""
        return layer_scores[group.sample, group.positions]

    def group_keep(self, ctx: LayerContext, group: TokenGroup) -> int:
        """How many tokens of `group` this layer keeps."""
        raise NotImplementedError

    def keep_group(
        self, ctx: LayerContext, group: TokenGroup, scores: torch.Tensor, count: int
    ) -> torch.Tensor:
        """Kept indices local to the group, ascending."""
        return top_indices(scores, count)

    def select_layer(self, ctx: LayerContext) -> list[list[torch.Tensor]]:
        layer_scores = self.layer_scores(ctx)
        kept: list[list[torch.Tensor]] = []
        for b, groups in enumerate(ctx.groups):
            per_group = []
            for positions, origins, grid in zip(groups, ctx.origins[b], ctx.grids[b]):
                if len(positions) == 0:  # nothing left to rank (and no size to take a budget of)
                    per_group.append(positions)
                    continue
                group = TokenGroup(b, positions, origins, grid)
                scores = self.group_scores(layer_scores, group)
                count = max(self.group_keep(ctx, group), int(torch.isposinf(scores).sum()))
                per_group.append(self.keep_group(ctx, group, scores, count))
            kept.append(per_group)
        return kept
