"""Recycling: the tokens a pruner drops are merged into a few summary tokens instead of discarded
(VFlowOpt's recycling step)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from tokenprune.pruners.adaptive import Adaptive
from tokenprune.pruners.base import Positions, PreLLMPruner, Selection, VisualTokens
from tokenprune.pruners.divprune import max_min_diverse
from tokenprune.pruners.downsample import Downsample


def summarize(features: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` summary tokens of `features` (M, D): seeds picked by farthest-point on cosine distance
    (DivPrune's greedy), every row assigned to its most cosine-similar seed, each summary the mean of
    its rows. Returns (seed row indices, summaries (count, D))."""
    seeds = max_min_diverse(features, count)
    unit = torch.nn.functional.normalize(features.float(), dim=-1)
    assignment = (unit @ unit[seeds].T).argmax(dim=1)
    assignment[seeds] = torch.arange(count, device=seeds.device)  # a seed always summarises itself
    sums = features.new_zeros(count, features.shape[1], dtype=torch.float32)
    sums.index_add_(0, assignment, features.float())
    sizes = torch.bincount(assignment, minlength=count).clamp(min=1)
    return seeds, (sums / sizes[:, None]).to(features.dtype)


@dataclass
class Recycle(PreLLMPruner):
    """Keep what `pruner` keeps, and merge the tokens it drops into `slots` summary tokens.

    The image's budget (`pruner.budget`) counts the summary tokens too: `pruner` selects
    budget - slots tokens, the rest are clustered around `slots` seeds chosen for diversity
    (farthest-point on cosine distance), each to its most similar seed, and each cluster becomes the
    mean of its projected features. A summary token takes the place (and position id) of its seed, a
    dropped token. slots: a number of tokens, or a fraction in (0, 1) of the kept tokens; at most
    budget - 1. Around an `Adaptive` pruner the count is the one its rule chooses for each image:
    its first count - slots picks stay and the rest of the image is recycled.
    """

    budget: int | float = field(init=False)
    positions: Positions = field(init=False)
    pruner: PreLLMPruner | None = None
    slots: int | float = 0.125

    def __post_init__(self) -> None:
        if not isinstance(self.pruner, PreLLMPruner):
            raise TypeError(
                f"Recycle wraps a pre-LLM pruner (e.g. DivPrune), got {type(self.pruner).__name__}"
            )
        if isinstance(self.pruner, Downsample):
            raise TypeError(
                "Downsample merges every token into its cell: Recycle has nothing left to recycle"
            )
        if isinstance(self.slots, bool) or not isinstance(self.slots, int | float):
            raise TypeError(f"slots must be an int or a fraction, got {type(self.slots).__name__}")
        if (isinstance(self.slots, int) and self.slots < 0) or (
            isinstance(self.slots, float) and not 0.0 <= self.slots < 1.0
        ):
            raise ValueError(f"slots must be a count >= 0 or a fraction in [0, 1), got {self.slots}")
        self.budget, self.positions = self.pruner.budget, self.pruner.positions
        self.needs = self.pruner.needs
        super().__post_init__()

    @property
    def name(self) -> str:
        return f"Recycle({self.pruner.name})"

    def with_budget(self, budget: int | float) -> Recycle:
        return replace(self, pruner=self.pruner.with_budget(budget))

    def slot_count(self, keep: int) -> int:
        slots = self.slots if isinstance(self.slots, int) else round(self.slots * keep)
        return max(0, min(slots, keep - 1))

    def select(self, tokens: VisualTokens) -> Selection:
        n = len(tokens)
        # around Adaptive the count is the rule's for this image: its best picks stay
        picks = self.pruner.picks(tokens) if isinstance(self.pruner, Adaptive) else None
        keep = self.keep_count(n) if picks is None else len(picks)
        if keep >= n:
            return Selection(torch.arange(n, device=tokens.features.device))
        slots = self.slot_count(keep)
        if picks is None:
            inner = self.pruner.with_budget(keep - slots).select(tokens)
        else:
            inner = Selection(picks[: keep - slots].sort().values)
        if slots == 0:
            return inner
        kept_features = inner.features if inner.features is not None else tokens.features[inner.indices]
        dropped = torch.ones(n, dtype=torch.bool, device=inner.indices.device)
        dropped[inner.indices] = False
        dropped_index = dropped.nonzero().squeeze(1)
        seeds, summaries = summarize(tokens.features[dropped_index], slots)
        indices = torch.cat([inner.indices, dropped_index[seeds]])
        features = torch.cat([kept_features, summaries.to(kept_features.dtype)])
        order = indices.argsort()
        return Selection(indices[order], features[order])
