"""In-tower pruners: Zero-TPrune (drop by attention-graph importance and similarity) and ToMe
(bipartite soft matching), run between the blocks of a vision tower."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenprune.pruners.base import TowerPruner, TowerStep, TowerTokens

# Weighted PageRank stops early once no score moves by more than this (scores sum to 1 per head, so
# a token's score is about 1/N): further iterations no longer change the ranking
CONVERGED = 1e-7


def weighted_pagerank(attention: torch.Tensor, iterations: int, alive: torch.Tensor | None = None):
    """Weighted PageRank on an attention graph: s <- A^T s, per head, from uniform scores.

    attention: (B, H, N, N) row-stochastic (row = query). A token is important when important tokens
    attend to it. alive: (B, N) the tokens still in the graph (None: all); the graph is then A
    restricted to them with its rows renormalised, applied without building it. The total score
    stays 1 per head. At most `iterations` steps (fewer once converged). Returns (B, H, N) float32.
    """
    attention = attention.float()
    if alive is None:  # the whole graph: its rows already sum to 1
        alive = torch.ones(attention.shape[0], attention.shape[-1], device=attention.device)
        rows = torch.ones(attention.shape[:-1], device=attention.device)
    else:  # row sums over the living keys: the restricted graph's row normalisation
        alive = alive.float()
        rows = torch.einsum("bhij,bj->bhi", attention, alive).clamp_min(1e-12)  # (B, H, N)
    alive = alive[:, None, :]  # (B, 1, N)
    scores = (alive / alive.sum(-1, keepdim=True)).expand(-1, attention.shape[1], -1)
    for _ in range(iterations):
        previous, scores = scores, alive * ((scores / rows).unsqueeze(-2) @ attention).squeeze(-2)
        if float((scores - previous).abs().max()) < CONVERGED:
            break
    return scores


def fuse_heads(
    scores: torch.Tensor, low: float = 0.01, high: float = 0.7, ranked: torch.Tensor | None = None
) -> torch.Tensor:
    """Emphasising-informative-region fusion: root mean square over heads, limited to the heads whose
    scores vary within [low, high] (variance of the scores scaled to mean 1); all heads when none
    does. ranked: (B, N) the tokens whose scores the variance is taken over (None: all), the tokens
    still in the graph. scores: (B, H, N) -> (B, N)."""
    if ranked is None:
        ranked = torch.ones(scores.shape[0], scores.shape[-1], dtype=torch.bool, device=scores.device)
    weights = ranked.float()[:, None, :] / ranked.sum(-1).clamp_min(1)[:, None, None]  # (B, 1, N)
    mean = (scores * weights).sum(-1, keepdim=True).clamp_min(1e-30)
    variance = ((scores / mean - 1).square() * weights).sum(-1)
    heads = ((variance >= low) & (variance <= high)).float()
    heads = torch.where(heads.sum(-1, keepdim=True) > 0, heads, torch.ones_like(heads))
    return ((scores.square() * heads[..., None]).sum(1) / heads.sum(-1, keepdim=True)).sqrt()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = torch.nn.functional.normalize(a.float(), dim=-1)
    b = torch.nn.functional.normalize(b.float(), dim=-1)
    return a @ b.transpose(-1, -2)


def _step_from_kept(kept_mask: torch.Tensor, into_token: torch.Tensor) -> TowerStep:
    """A TowerStep from a (B, N) mask of kept tokens and, per token, the token it goes into (-1: none)."""
    keep = int(kept_mask[0].sum())
    kept = kept_mask.nonzero()[:, 1].view(len(kept_mask), keep)
    slot = torch.full_like(into_token, -1)
    slot.scatter_(1, kept, torch.arange(keep, device=kept.device).expand_as(kept))
    into = torch.where(into_token >= 0, slot.gather(1, into_token.clamp(min=0)), -1)
    return TowerStep(kept, into)


def _layer_counts(pruner: TowerPruner, counts: list[int], depth: int) -> tuple[tuple[int, int], ...]:
    return tuple(zip(pruner.tower_layers(depth), counts))


@dataclass
class ZeroTPrune(TowerPruner):
    """Zero-TPrune (Wang et al., CVPR 2024, arXiv 2305.17328): at each pruning block, one Weighted
    PageRank step on the block's attention graph splits the tokens into a less important half and the
    rest; the less important tokens most similar (cosine of keys) to an important one are dropped
    (`similar`: their share of the step's drops), then WPR over the remaining graph ranks the rest and
    the least important are dropped. Counts shrink geometrically over `layers` to the budget.

    iterations: WPR iterations; None follows the paper (30 in the first three blocks, 1 in the last
    three, 5 between). Heads are fused by root mean square over the heads whose scaled score
    variance lies in `head_variance` (the paper's head filter; None: over all heads). The filter
    keeps broad heads: on a tower whose informative heads single out a few small objects it keeps
    only near-uniform ones (docs/reference-models.md, toy-vlm).
    """

    budget: int | float
    layers: tuple[int, ...] | None = None
    similar: float = 0.5
    iterations: int | None = None
    head_variance: tuple[float, float] | None = (0.01, 0.7)

    needs = frozenset({"attention"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.similar <= 1.0:
            raise ValueError(f"similar must lie in [0, 1], got {self.similar}")
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.head_variance is not None and not 0.0 <= self.head_variance[0] <= self.head_variance[1]:
            raise ValueError(
                f"head_variance must be (low, high) with 0 <= low <= high, got {self.head_variance}"
            )

    def default_layers(self, depth: int) -> tuple[int, ...]:
        # three steps in the first half of the tower
        return tuple(sorted({min(depth - 1, round(depth * f)) for f in (1 / 8, 1 / 4, 3 / 8)}))

    def schedule(self, available: int, depth: int) -> tuple[tuple[int, int], ...]:
        final = self.keep_count(available)
        steps = len(self.tower_layers(depth))
        ratio = final / available
        counts = [max(final, round(available * ratio ** ((i + 1) / steps))) for i in range(steps)]
        counts[-1] = final
        return _layer_counts(self, counts, depth)

    def _iterations(self, layer: int, depth: int) -> int:
        if self.iterations is not None:
            return self.iterations
        if layer < 3:
            return 30
        return 1 if layer >= depth - 3 else 5

    def step(self, tokens: TowerTokens, keep: int) -> TowerStep:
        if tokens.attention is None:
            raise ValueError("ZeroTPrune needs the block's attention probabilities")
        batch, n = tokens.sizes.shape
        protected = tokens.protected
        prunable = n - protected
        drop = prunable - keep
        device = tokens.keys.device
        alive = torch.ones(batch, n, dtype=torch.bool, device=device)
        if drop <= 0:
            return _step_from_kept(alive, torch.arange(n, device=device).expand(batch, n).clone())
        low, high = self.head_variance or (0.0, float("inf"))
        # I': one WPR step, only to split the tokens for the similarity stage
        first = fuse_heads(weighted_pagerank(tokens.attention, 1), low, high)[:, protected:]
        order = first.argsort(dim=1, stable=True) + protected
        half = prunable // 2
        by_similarity = min(round(self.similar * drop), half)
        if by_similarity:
            less, more = order[:, :half], order[:, half:]
            keys = tokens.keys
            similarity = _cosine(
                keys.gather(1, less[..., None].expand(-1, -1, keys.shape[-1])),
                keys.gather(1, more[..., None].expand(-1, -1, keys.shape[-1])),
            )
            best = similarity.amax(dim=-1)
            dropped = less.gather(1, best.argsort(dim=1, descending=True, stable=True)[:, :by_similarity])
            alive.scatter_(1, dropped, False)
        # I: WPR on the graph of the tokens left, the least important of them dropped
        iterations = self._iterations(tokens.layer, tokens.depth)
        importance = fuse_heads(weighted_pagerank(tokens.attention, iterations, alive), low, high, alive)
        importance[:, :protected] = float("inf")
        importance = importance.masked_fill(~alive, float("-inf"))
        rest = drop - by_similarity
        if rest:
            least = importance.argsort(dim=1, stable=True)[:, by_similarity : by_similarity + rest]
            alive.scatter_(1, least, False)
        identity = torch.arange(n, device=device).expand(batch, n)
        return _step_from_kept(alive, torch.where(alive, identity, -1))


def bipartite_soft_matching(keys: torch.Tensor, merges: int, protected: int = 0) -> TowerStep:
    """ToMe's matching: the unprotected tokens alternate into sets A (even) and B (odd); each A token
    keeps its most similar B token (cosine of keys) and the `merges` strongest such edges merge their
    A token into its B token. Tokens keep their order. keys: (B, N, d)."""
    batch, n, _ = keys.shape
    device = keys.device
    identity = torch.arange(n, device=device).expand(batch, n).clone()
    side_a = torch.arange(protected, n, 2, device=device)
    side_b = torch.arange(protected + 1, n, 2, device=device)
    if merges > len(side_a) or (merges and not len(side_b)):
        raise ValueError(f"ToMe cannot merge {merges} of {n - protected} tokens in one step (at most half)")
    if merges == 0:
        return _step_from_kept(torch.ones(batch, n, dtype=torch.bool, device=device), identity)
    unit = torch.nn.functional.normalize(keys.float(), dim=-1)
    similarity = unit[:, protected::2] @ unit[:, protected + 1 :: 2].transpose(-1, -2)
    best, partner = similarity.max(dim=-1)
    edges = best.argsort(dim=-1, descending=True, stable=True)[:, :merges]
    merged = side_a[edges]
    into_token = identity.scatter(1, merged, side_b[partner.gather(1, edges)])
    kept = torch.ones(batch, n, dtype=torch.bool, device=device).scatter(1, merged, False)
    return _step_from_kept(kept, into_token)


@dataclass
class ToMe(TowerPruner):
    """Token Merging (Bolya et al., ICLR 2023, arXiv 2210.09461): before each block of `layers`,
    bipartite soft matching on the block's head-averaged keys merges r tokens into their most similar
    partners (size-weighted averages), and attention adds log(size) to each key's logits (proportional
    attention). The merges are split over the layers so that the last step leaves the budget: evenly
    by default, or, as the paper's schedule option, ramping linearly from r(1 - inflect) at the first
    layer to r(1 + inflect) at the last (inflect < 0 merges more early). A step merges at most half of
    its tokens.
    """

    budget: int | float
    layers: tuple[int, ...] | None = None
    inflect: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not -1.0 <= self.inflect <= 1.0:
            raise ValueError(f"inflect must lie in [-1, 1], got {self.inflect}")

    def default_layers(self, depth: int) -> tuple[int, ...]:
        return tuple(range(depth))  # every block, as the paper

    def schedule(self, available: int, depth: int) -> tuple[tuple[int, int], ...]:
        final = self.keep_count(available)
        steps = len(self.tower_layers(depth))
        counts, left = [], available
        for r in self._merges(available - final, steps):
            if r > (left + 1) // 2:
                raise ValueError(
                    f"ToMe: keeping {final} of {available} tokens over {steps} blocks merges {r} of "
                    f"{left} tokens in one block (at most half); give more layers or a larger budget"
                )
            left -= r
            counts.append(left)
        return _layer_counts(self, counts, depth)

    def _merges(self, total: int, steps: int) -> list[int]:
        """`total` merges over `steps` layers along the schedule, rounded by largest remainder (ties
        to earlier layers)."""
        ramp = [i / (steps - 1) if steps > 1 else 0.5 for i in range(steps)]
        weights = [1 - self.inflect + 2 * self.inflect * x for x in ramp]
        shares = [total * w / sum(weights) for w in weights]
        merges = [int(share) for share in shares]
        by_remainder = sorted(range(steps), key=lambda i: (merges[i] - shares[i], i))
        for i in by_remainder[: total - sum(merges)]:
            merges[i] += 1
        return merges

    def step(self, tokens: TowerTokens, keep: int) -> TowerStep:
        return bipartite_soft_matching(tokens.keys, len(tokens) - tokens.protected - keep, tokens.protected)


def merge_tokens(
    hidden: torch.Tensor, sizes: torch.Tensor, step: TowerStep
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a TowerStep to (B, N, D) hidden states and their (B, N) sizes: kept tokens gathered,
    merged ones averaged into their slot by size. A step that only drops gathers exactly."""
    batch, keep = step.kept.shape
    if bool(((step.into >= 0).sum(1) == keep).all()):
        index = step.kept[..., None].expand(-1, -1, hidden.shape[-1])
        return hidden.gather(1, index), sizes.gather(1, step.kept)
    width = hidden.shape[-1]
    weights = (sizes * (step.into >= 0)).flatten()
    # rows added into the batch's (B * K) slots by one index per token, in token order
    offsets = torch.arange(batch, device=step.into.device)[:, None] * keep
    slot = (step.into.clamp(min=0) + offsets).flatten()
    new_sizes = torch.zeros(batch * keep, dtype=sizes.dtype, device=sizes.device).index_add_(0, slot, weights)
    summed = torch.zeros(batch * keep, width, dtype=torch.float32, device=hidden.device)
    summed.index_add_(0, slot, hidden.float().flatten(0, 1) * weights[:, None])
    merged = (summed / new_sizes[:, None]).view(batch, keep, width)
    return merged.to(hidden.dtype), new_sizes.view(batch, keep)
