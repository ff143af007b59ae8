"""Adaptive budgets: how many tokens an image keeps, decided per image from the pruner's own scores
(a training-free stand-in for ATP-LLaVA's learned thresholds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from tokenprune.budget import resolve_budget, validate_budget
from tokenprune.pruners.base import LayerContext, Positions, PreLLMPruner, Selection, VisualTokens
from tokenprune.pruners.scored import ScoredLayerPruner, TokenGroup

RULES = ("mass", "cover", "iqr", "relevance")


@dataclass(frozen=True)
class Ranking:
    """Tokens in the order a greedy selection picks them, with what each pick adds.

    order: (k,) token indices; gains: (k,) >= 0, the share of `total` each pick covers, so
    gains.cumsum() / total is the share covered by the first picks (nondecreasing, at most 1).
    uncovered: (k,) for rankers that cover every token (CDPruner), the largest share of any token not
    yet picked that the first t + 1 picks leave unexplained."""

    order: torch.Tensor
    gains: torch.Tensor | None
    total: float
    uncovered: torch.Tensor | None = None


def mass_count(ranking: Ranking, target: float) -> int:
    """The fewest first picks whose gains reach `target` of the total (all picks if none do)."""
    covered = ranking.gains.double().cumsum(0) / max(ranking.total, 1e-30)
    reached = (covered >= target).nonzero()
    return int(reached[0]) + 1 if len(reached) else len(ranking.order)


def cover_count(ranking: Ranking, target: float) -> int:
    """The fewest first picks that explain at least `target` of every other token (all picks if none do)."""
    if ranking.uncovered is None:
        raise ValueError(
            "the cover rule needs a ranking that tracks what each token keeps unexplained (CDPruner)"
        )
    reached = (ranking.uncovered <= 1.0 - target).nonzero()
    return int(reached[0]) + 1 if len(reached) else len(ranking.order)


def relevant_share(relevance: torch.Tensor, target: float) -> float:
    """The share of tokens whose relevance to the instruction (in [0, 1)) is at least 1 - target."""
    return float((relevance >= 1.0 - target).double().mean())


def outlier_count(scores: torch.Tensor) -> int:
    """PruMerge's rule: how many scores lie above Q3 + 1.5 (Q3 - Q1) (linear quantiles)."""
    q1, q3 = torch.quantile(scores.double(), torch.tensor([0.25, 0.75], dtype=torch.float64))
    return int((scores.double() > q3 + 1.5 * (q3 - q1)).sum())


@dataclass
class Adaptive(PreLLMPruner):
    """Let each image keep as many tokens as its scores call for, between `min_tokens` and the
    wrapped pruner's budget, in the wrapped pruner's own order.

    rule="mass": the fewest picks whose gains reach `target` of the total gain: attention mass for
    attention rankers, the share of the (relevance-weighted) similarity kernel's trace the picks
    explain for CDPruner. rule="cover" (CDPruner): the fewest picks after which every other token has
    at least `target` of itself explained by the picks (its similarity-space residual), so a small
    object unlike the rest is kept even when it is little of the total. Target 1 keeps the pruner's
    budget. rule="iqr": as many picks as there are outliers among all tokens' gains (PruMerge's
    interquartile rule). rule="relevance" (CDPruner; question-aware): min_tokens plus the share of the
    tokens whose relevance to the instruction is at least 1 - target, times what lies between
    min_tokens and the budget: an instruction about one thing is relevant to few tokens and keeps
    few, one about the whole image keeps many. `pruner` must rank tokens
    (a `rank(tokens, limit, until)` method: CDPruner, FoPru; `until` = (rule, target) lets a ranker
    stop where the rule is met). Stats record the chosen count of every image.
    """

    budget: int | float = field(init=False)
    positions: Positions = field(init=False)
    pruner: PreLLMPruner | None = None
    target: float = 0.95
    rule: Literal["mass", "cover", "iqr", "relevance"] = "cover"
    min_tokens: int | float = 1

    def __post_init__(self) -> None:
        if not isinstance(self.pruner, PreLLMPruner) or not callable(getattr(self.pruner, "rank", None)):
            raise TypeError(
                f"Adaptive wraps a pre-LLM pruner that ranks tokens (CDPruner, FoPru), got {self.pruner!r}; "
                "in-LLM pruners take AdaptiveLayer"
            )
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if self.rule == "relevance" and not callable(getattr(self.pruner, "relevance", None)):
            raise ValueError(
                f"rule='relevance' needs a pruner that scores relevance to the instruction (CDPruner), "
                f"got {self.pruner.name}"
            )
        if isinstance(self.target, bool) or not 0.0 < self.target <= 1.0:
            raise ValueError(f"target must lie in (0, 1], got {self.target}")
        self.min_tokens = validate_budget(self.min_tokens, "min_tokens")
        self.budget, self.positions = self.pruner.budget, self.pruner.positions
        self.needs = self.pruner.needs
        super().__post_init__()

    @property
    def name(self) -> str:
        return f"Adaptive({self.pruner.name})"

    def with_budget(self, budget: int | float) -> Adaptive:
        return replace(self, pruner=self.pruner.with_budget(budget))

    def bounds(self, n: int) -> tuple[int, int]:
        """The fewest and most tokens an image of `n` tokens may keep."""
        most = self.keep_count(n)
        return min(most, resolve_budget(self.min_tokens, n)), most

    def count(self, ranking: Ranking, least: int, most: int, target: float) -> int:
        """How many of `ranking`'s first picks the rule keeps at `target`, within [least, most]."""
        if self.rule == "iqr":
            count = outlier_count(ranking.gains)
        elif target == 1.0:
            count = most
        else:
            count = (mass_count if self.rule == "mass" else cover_count)(ranking, target)
        return max(least, min(most, count))

    def relevant_count(self, relevance: torch.Tensor, least: int, most: int, target: float) -> int:
        """rule="relevance": how many tokens an image keeps at `target`, within [least, most]."""
        return least + round((most - least) * relevant_share(relevance, target))

    def picks(self, tokens: VisualTokens) -> torch.Tensor:
        """The tokens this image keeps, in the wrapped ranker's pick order (best first)."""
        least, most = self.bounds(len(tokens))
        if self.rule == "relevance":
            count = self.relevant_count(self.pruner.relevance(tokens), least, most, self.target)
            return self.pruner.rank(tokens, count).order[:count]
        if self.rule == "iqr":
            ranking = self.pruner.rank(tokens, len(tokens))
        elif self.target == 1.0:
            return self.pruner.rank(tokens, most).order[:most]
        else:  # a ranker may stop where the rule is met
            ranking = self.pruner.rank(tokens, most, until=(self.rule, self.target))
        return ranking.order[: self.count(ranking, least, most, self.target)]

    def select(self, tokens: VisualTokens) -> Selection:
        if self.rule != "iqr" and self.target == 1.0:
            return self.pruner.select(tokens)
        return Selection(self.picks(tokens).sort().values)


def calibrate(adaptive: Adaptive, samples: Sequence[VisualTokens], budget: int | float) -> Adaptive:
    """`adaptive` with the largest target at which the images of `samples` keep on average at most
    `budget` tokens (a count, or a fraction of each image's tokens), or its smallest useful target if
    none does. ATP-LLaVA learns its pruning thresholds from data; this fits the one threshold of a
    rule to unlabelled images (with their instructions, for question-aware rankers), so that `budget`
    is a mean over images and each image keeps more or fewer as its scores call for, up to the wrapped
    pruner's budget."""
    if adaptive.rule == "iqr":
        raise ValueError("rule='iqr' has no target to calibrate")
    if not samples:
        raise ValueError("calibrate needs at least one sample")
    budget = validate_budget(budget)
    goal = sum(resolve_budget(budget, len(tokens)) for tokens in samples) / len(samples)
    relevance_rule = adaptive.rule == "relevance"
    images = []
    for tokens in samples:
        least, most = adaptive.bounds(len(tokens))
        scores = adaptive.pruner.relevance(tokens) if relevance_rule else adaptive.pruner.rank(tokens, most)
        images.append((scores, least, most))
    count = adaptive.relevant_count if relevance_rule else adaptive.count
    # the mean count changes only at targets where some image's count moves on by one token
    candidates = set()
    for scores, _, _ in images:
        if relevance_rule:  # where a token's relevance reaches 1 - target
            reached = 1.0 - scores.double()
        elif adaptive.rule == "mass":
            reached = scores.gains.double().cumsum(0) / max(scores.total, 1e-30)
        else:
            reached = 1.0 - scores.uncovered.double()
        candidates.update(reached.clamp(max=1.0).tolist())
    targets = sorted(t for t in candidates if t > 0.0) or [1.0]

    def mean_count(target: float) -> float:
        return sum(count(scores, least, most, target) for scores, least, most in images) / len(images)

    low, high = 0, len(targets) - 1  # the mean count does not decrease with the target
    if mean_count(targets[low]) > goal:
        return replace(adaptive, target=targets[low])
    while low < high:
        middle = (low + high + 1) // 2
        if mean_count(targets[middle]) <= goal:
            low = middle
        else:
            high = middle - 1
    return replace(adaptive, target=targets[low])


@dataclass
class AdaptiveLayer(ScoredLayerPruner):
    """Adaptive budgets inside the language model: before each of its layers, `pruner` (FastV,
    Feather) keeps in every image the fewest of its best-scored tokens that hold `target` of the
    image's attention mass there, at least `min_tokens` and at most what `pruner` would keep. Each
    layer decides for itself; records carry the count chosen per image and layer."""

    budget: int | float = field(init=False)
    positions: Positions = field(init=False)
    pruner: ScoredLayerPruner | None = None
    target: float = 0.9
    min_tokens: int | float = 1

    def __post_init__(self) -> None:
        if not isinstance(self.pruner, ScoredLayerPruner):
            raise TypeError(
                f"AdaptiveLayer wraps an in-LLM pruner that scores tokens (FastV, Feather), got {self.pruner!r}"
            )
        if isinstance(self.target, bool) or not 0.0 < self.target <= 1.0:
            raise ValueError(f"target must lie in (0, 1], got {self.target}")
        self.min_tokens = validate_budget(self.min_tokens, "min_tokens")
        self.budget, self.positions = self.pruner.budget, self.pruner.positions
        super().__post_init__()

    @property
    def name(self) -> str:
        return f"AdaptiveLayer({self.pruner.name})"

    def layers(self) -> tuple[int, ...]:
        return self.pruner.layers()

    def for_depth(self, num_layers: int) -> AdaptiveLayer:
        return replace(self, pruner=self.pruner.for_depth(num_layers))

    def layer_scores(self, ctx: LayerContext) -> torch.Tensor:
        return self.pruner.layer_scores(ctx)

    def group_scores(self, layer_scores: torch.Tensor, group: TokenGroup) -> torch.Tensor:
        return self.pruner.group_scores(layer_scores, group)

    def group_keep(self, ctx: LayerContext, group: TokenGroup) -> int:
        return self.pruner.group_keep(ctx, group)

    def keep_group(
        self, ctx: LayerContext, group: TokenGroup, scores: torch.Tensor, count: int
    ) -> torch.Tensor:
        protected = int(torch.isposinf(scores).sum())
        finite = scores[torch.isfinite(scores)].clamp(min=0).sort(descending=True).values
        ranking = Ranking(torch.arange(len(finite)), finite, float(finite.sum()))
        least = min(count, resolve_budget(self.min_tokens, len(scores)))
        chosen = mass_count(ranking, self.target) if self.target < 1.0 else count
        return self.pruner.keep_group(ctx, group, scores, max(protected, least, min(count, chosen)))
