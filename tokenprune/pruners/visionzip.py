"""VisionZip: dominant tokens by vision [CLS] attention plus merged contextual tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tokenprune.pruners.base import PreLLMPruner, Selection, VisualTokens

# VisionZip's reference split of a 64-token budget: 54 dominant + 10 contextual.
DEFAULT_CONTEXTUAL_SHARE = 10 / 64


def merge_into_targets(
    metric: torch.Tensor, values: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick `count` uniformly strided targets among the rows and average every other row into the
    target whose `metric` is most cosine-similar. Returns (target row indices, merged values)."""
    n = metric.shape[0]
    step = max(1, n // count)
    targets = torch.arange(0, n, step, device=metric.device)[:count]
    is_target = torch.zeros(n, dtype=torch.bool, device=metric.device)
    is_target[targets] = True
    unit = torch.nn.functional.normalize(metric.float(), dim=-1)
    assignment = (unit[~is_target] @ unit[targets].T).argmax(dim=-1)
    sums = values[targets].float().clone()
    sums.index_add_(0, assignment, values[~is_target].float())
    counts = torch.ones(len(targets), device=metric.device).index_add_(
        0, assignment, torch.ones(len(assignment), device=metric.device)
    )
    return targets, (sums / counts[:, None]).to(values.dtype)


@dataclass
class VisionZip(PreLLMPruner):
    """Dominant tokens by [CLS]->patch attention at the vision feature layer (summed over heads),
    plus `contextual` tokens: the rest averaged into uniformly strided targets by key similarity.

    contextual: how many of the budget's tokens are merged ones; None takes VisionZip's 10/64 share,
    0 keeps dominant tokens only. Merging happens before the projector, as in the original.
    """

    contextual: int | None = None

    needs: ClassVar[frozenset[str]] = frozenset({"attention", "keys", "pre_projection"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.contextual is not None and (
            isinstance(self.contextual, bool) or not isinstance(self.contextual, int)
        ):
            raise TypeError(f"contextual must be an int or None, got {type(self.contextual).__name__}")
        if self.contextual is not None and self.contextual < 0:
            raise ValueError(f"contextual must be >= 0, got {self.contextual}")

    def split(self, keep: int) -> tuple[int, int]:
        contextual = round(keep * DEFAULT_CONTEXTUAL_SHARE) if self.contextual is None else self.contextual
        contextual = min(contextual, keep - 1) if keep > 1 else 0
        return keep - contextual, contextual

    def select(self, tokens: VisualTokens) -> Selection:
        n = len(tokens)
        keep = self.keep_count(n)
        if tokens.attention is None:
            raise ValueError("VisionZip needs vision-tower attention; this adapter did not provide it")
        if keep >= n:
            return Selection(torch.arange(n, device=tokens.features.device))
        dominant_count, contextual_count = self.split(keep)
        dominant = tokens.attention.topk(dominant_count).indices
        if contextual_count == 0:
            return Selection(dominant.sort().values)
        rest = torch.ones(n, dtype=torch.bool, device=dominant.device)
        rest[dominant] = False
        rest_index = rest.nonzero().squeeze(1)
        if tokens.keys is None:
            raise ValueError(
                "VisionZip contextual merging needs vision keys; this adapter did not provide them"
            )
        space = tokens.pre_projection if tokens.pre_projection is not None else tokens.features
        targets, merged = merge_into_targets(tokens.keys[rest_index], space[rest_index], contextual_count)
        if tokens.pre_projection is not None:
            merged = tokens.project(merged)
        indices = torch.cat([dominant, rest_index[targets]])
        features = torch.cat([tokens.features[dominant], merged.to(tokens.features.dtype)])
        order = indices.argsort()
        return Selection(indices[order], features[order])
