"""DART: inside the language model, keep the visual tokens least duplicated by a few pivot tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokenprune.pruners.base import LayerContext, LayerPruner


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` split into `parts` counts differing by at most one, larger ones first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def least_duplicated(
    states: torch.Tensor, pivots: torch.Tensor, pool: torch.Tensor, counts: list[int]
) -> list:
    """For each pivot in turn, the `counts[i]` tokens of `pool` least cosine-similar to it; each pick
    leaves the pool. states: (L, D) hidden states; pivots, pool: positions into them."""
    unit = torch.nn.functional.normalize(states.float(), dim=-1)
    available = torch.ones(len(pool), dtype=torch.bool, device=pool.device)
    picks = []
    for pivot, count in zip(pivots.tolist(), counts):
        similarity = (unit[pool] @ unit[pivot]).masked_fill(~available, float("inf"))
        chosen = (-similarity).topk(count).indices
        available[chosen] = False
        picks.append(pool[chosen])
    return picks


@dataclass
class DART(LayerPruner):
    """DART (EMNLP 2025): before decoder layer `layer`, pick `pivots` image tokens with the largest
    key L1 norm at layer `layer - 1` (RoPE applied, heads flattened) and `text_pivots` text tokens
    after the image the same way; each pivot in turn (sequence order) claims the image tokens least
    cosine-similar to it (hidden states entering `layer`, after the final norm). The image keeps its
    pivots and the claimed tokens: exactly `budget`, the claims split as evenly as possible over the
    pivots (DART's code gives every pivot budget // (pivots + text_pivots) and overshoots). Text
    pivots only vote.
    """

    layer: int = 2
    pivots: int = 4
    text_pivots: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("pivots", "text_pivots"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.pivots + self.text_pivots == 0:
            raise ValueError("DART needs at least one pivot")

    def layers(self) -> tuple[int, ...]:
        return (self.layer,)

    def select_layer(self, ctx: LayerContext) -> list[list[torch.Tensor]]:
        if ctx.states is None:
            raise ValueError(
                "DART needs the hidden states entering its layer; this adapter did not provide them"
            )
        key_norms = (
            ctx.attention.keys(rope=True).float().abs().sum(dim=(1, 3))
        )  # (B, L): L1 over heads x dims
        states = None
        kept: list[list[torch.Tensor]] = []
        for b, groups in enumerate(ctx.groups):
            in_groups = torch.zeros_like(ctx.valid[b])
            for positions in groups:
                in_groups[positions] = True
            per_group = []
            for positions, grid in zip(groups, ctx.grids[b]):
                n = len(positions)
                budget = self.keep_count(_original_size(positions, grid))
                if budget >= n:
                    per_group.append(torch.arange(n, device=positions.device))
                    continue
                if states is None:
                    states = ctx.states()
                after = torch.arange(len(in_groups), device=positions.device) > positions.max()
                text = (ctx.valid[b] & ~in_groups & after).nonzero().squeeze(1)
                per_group.append(self.select_group(states[b], key_norms[b], positions, text, budget))
            kept.append(per_group)
        return kept

    def select_group(
        self,
        states: torch.Tensor,
        key_norms: torch.Tensor,
        image: torch.Tensor,
        text: torch.Tensor,
        budget: int,
    ) -> torch.Tensor:
        """Kept indices local to `image` (ascending) for one image whose tokens sit at positions
        `image`, followed by text tokens at `text`; states (L, D) and key_norms (L,) cover the sequence."""
        image_pivots = key_norms[image].topk(min(self.pivots, budget)).indices  # local
        text_pivots = text[key_norms[text].topk(min(self.text_pivots, len(text))).indices]
        pivots = torch.cat([image[image_pivots], text_pivots]).sort().values
        pool = torch.ones(len(image), dtype=torch.bool, device=image.device)
        pool[image_pivots] = False
        pool_local = pool.nonzero().squeeze(1)
        if len(pivots) == 0:  # no image pivots asked for and no text after the image
            return key_norms[image].topk(budget).indices.sort().values
        claims = split_evenly(budget - len(image_pivots), len(pivots))
        picks = least_duplicated(states, pivots, image[pool_local], claims)
        picked = torch.searchsorted(image, torch.cat(picks))  # image positions ascend
        return torch.cat([image_pivots, picked]).sort().values


def _original_size(positions: torch.Tensor, grid: tuple[int, ...] | None) -> int:
    return math.prod(grid) if grid else len(positions)
