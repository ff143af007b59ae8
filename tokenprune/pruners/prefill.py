"""Prompt-token skipping during LLM prefill: LazySkip (progressive, LazyLLM-style) and GemFilter
(select with the early layers, then prefill only the selected tokens)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch

from tokenprune.attention import head_mean_probabilities
from tokenprune.budget import resolve_budget
from tokenprune.pruners.base import AttentionRows, LayerContext, Pruner
from tokenprune.pruners.scored import ScoredLayerPruner, TokenGroup, top_indices

# LazyLLM-style progressive schedule as (fraction of depth, fraction of the prompt kept from there on);
# on 32 layers it is [(8, 0.5), (16, 0.25), (24, 0.1)]. Milder schedules such as [(8, 0.7), (16, 0.5),
# (24, 0.3)] cap the FLOP-ideal prefill speedup near 1.6-1.8x.
DEFAULT_SCHEDULE: tuple[tuple[float, float], ...] = ((0.25, 0.5), (0.5, 0.25), (0.75, 0.1))


def _check_schedule(schedule) -> tuple[tuple[int | float, float], ...]:
    try:
        entries = [tuple(entry) for entry in schedule]
    except TypeError:
        raise TypeError(
            f"schedule must be a sequence of (layer, keep_fraction) pairs, got {type(schedule).__name__}"
        ) from None
    if not entries:
        raise ValueError("schedule needs at least one (layer, keep_fraction) pair")
    if any(len(e) != 2 for e in entries):
        raise ValueError(f"schedule entries must be (layer, keep_fraction) pairs, got {entries}")
    layers = [layer for layer, _ in entries]
    ints = all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in layers)
    depth_fractions = all(isinstance(x, float) and 0.0 < x < 1.0 for x in layers)
    if not (ints or depth_fractions):
        raise ValueError(
            "schedule layers must be all layer indices (ints) or all fractions of the depth (floats in "
            f"(0, 1)), got {layers}"
        )
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"schedule layers must be strictly increasing, got {layers}")
    if ints and layers[0] < 1:
        raise ValueError(f"schedule layers must be >= 1 (layer 0 sees the whole prompt), got {layers}")
    keeps = []
    for _, keep in entries:
        if isinstance(keep, bool) or not isinstance(keep, numbers.Real) or not 0.0 < float(keep) <= 1.0:
            raise ValueError(f"schedule keep fractions must lie in (0, 1], got {keep!r}")
        keeps.append(float(keep))
    if any(b > a for a, b in zip(keeps, keeps[1:])):
        raise ValueError(
            f"schedule keep fractions must not increase (dropped tokens stay dropped), got {keeps}"
        )
    return tuple((int(layer) if ints else float(layer), keep) for layer, keep in zip(layers, keeps))


def _prompt_size(group: TokenGroup) -> int:
    # the group's last token is always kept, so the largest origin gives the prompt size
    return int(group.origins.max()) + 1


@dataclass
class LazySkip(ScoredLayerPruner):
    """Progressive prompt-token dropping inside the prefill (LazyLLM without revival).

    schedule: (layer, keep) pairs; from decoder layer `layer` on, only the fraction `keep` of the
    prompt remains in the hidden states, so later layers compute (and cache) fewer tokens. Layers are
    indices, or all floats in (0, 1) for fractions of the model depth; the default is
    DEFAULT_SCHEDULE. Before each scheduled layer, the remaining tokens are scored by the attention
    the last `window` queries give them in the previous layer (softmax over keys, mean over heads and
    queries); the first `sinks` and the last `window` prompt tokens are always kept. The adapter
    never drops a prompt's final token. For image groups (LVLMs) `keep` is a fraction of each image,
    with no sinks or window. `budget` is derived: the fraction kept by the last layers.

    Tokens dropped at a layer never come back (LazyLLM's auxiliary-cache revival is not implemented).
    """

    budget: int | float = field(init=False, default=1.0)
    schedule: tuple[tuple[int | float, float], ...] | None = None
    window: int = 8
    sinks: int = 4

    def __post_init__(self) -> None:
        self.schedule = _check_schedule(DEFAULT_SCHEDULE if self.schedule is None else self.schedule)
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an int >= 1, got {self.window!r}")
        if isinstance(self.sinks, bool) or not isinstance(self.sinks, int) or self.sinks < 0:
            raise ValueError(f"sinks must be an int >= 0, got {self.sinks!r}")
        self.budget = self.schedule[-1][1]
        super().__post_init__()

    @property
    def depth_relative(self) -> bool:
        return isinstance(self.schedule[0][0], float)

    def for_depth(self, num_layers: int) -> LazySkip:
        if not self.depth_relative:
            return self
        layers = [max(1, round(fraction * num_layers)) for fraction, _ in self.schedule]
        if any(b <= a for a, b in zip(layers, layers[1:])) or layers[-1] >= num_layers:
            raise ValueError(
                f"{self.name}: schedule {list(self.schedule)} does not resolve to distinct layers in "
                f"[1, {num_layers - 1}] for a model of {num_layers} layers (got {layers}); give layer indices"
            )
        return replace(self, schedule=tuple(zip(layers, (keep for _, keep in self.schedule))))

    def layers(self) -> tuple[int, ...]:
        if self.depth_relative:
            raise ValueError(
                f"{self.name}: resolve the depth-relative schedule with for_depth(num_layers) first"
            )
        return tuple(layer for layer, _ in self.schedule)

    def layer_scores(self, ctx: LayerContext) -> torch.Tensor:
        return head_mean_probabilities(ctx.attention.logits(window=self.window, rope=True))

    def group_scores(self, layer_scores: torch.Tensor, group: TokenGroup) -> torch.Tensor:
        scores = super().group_scores(layer_scores, group)  # a copy: indexed by positions
        if not group.grid:
            origins = group.origins
            protected = (origins < self.sinks) | (origins >= _prompt_size(group) - self.window)
            scores[protected] = float("inf")
        return scores

    def group_keep(self, ctx: LayerContext, group: TokenGroup) -> int:
        size = math.prod(group.grid) if group.grid else _prompt_size(group)
        return resolve_budget(self.schedule[ctx.step][1], size)


@dataclass
class PromptContext:
    """What a prefill-stage pruner sees: `attention` rows of its filter layer over the language-model
    input, and per sample the input positions it may drop (`candidates`, ascending) out of
    `lengths[b]` real tokens; every other token is always prefilled."""

    attention: AttentionRows
    candidates: list[torch.Tensor]
    lengths: list[int]


class PrefillPruner(Pruner):
    """Chooses which prompt tokens the language model prefills, from the hidden states entering
    decoder layer `self.filter_layer` (subclasses define that field)."""

    stage: ClassVar[str] = "prefill"

    def select_prompt(self, ctx: PromptContext) -> list[torch.Tensor]:
        """Per sample: indices into `ctx.candidates[b]` to keep (ascending)."""
        raise NotImplementedError


@dataclass
class GemFilter(PrefillPruner):
    """GemFilter: run layers 0..filter_layer - 1, score every prompt token by the RoPE-applied dot
    product with the last query at layer `filter_layer`, summed over heads and smoothed over
    neighbours (mean over `pool` tokens), then prefill only the top tokens.

    budget: prompt tokens prefilled per sample (count or fraction of the prompt), the final token
    included. The paper renumbers kept tokens (`positions="reindex"`); the default keeps originals.
    """

    filter_layer: int = 13
    pool: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if (
            isinstance(self.filter_layer, bool)
            or not isinstance(self.filter_layer, int)
            or self.filter_layer < 0
        ):
            raise ValueError(f"filter_layer must be an int >= 0, got {self.filter_layer!r}")
        if (
            isinstance(self.pool, bool)
            or not isinstance(self.pool, int)
            or self.pool < 1
            or self.pool % 2 == 0
        ):
            raise ValueError(f"pool must be an odd int >= 1, got {self.pool!r}")

    def select_prompt(self, ctx: PromptContext) -> list[torch.Tensor]:
        # the 1/sqrt(d) scale of the logits does not change the ranking of the paper's raw dot products
        logits = ctx.attention.logits(window=1, rope=True)[:, :, 0]
        kept = []
        for b, candidates in enumerate(ctx.candidates):
            if len(candidates) == 0:
                kept.append(candidates)
                continue
            scores = logits[b][:, candidates].sum(0)
            scores = torch.nn.functional.avg_pool1d(
                scores[None, None], self.pool, stride=1, padding=self.pool // 2, count_include_pad=False
            )[0, 0]
            always = ctx.lengths[b] - len(candidates)
            kept.append(top_indices(scores, max(self.keep_count(ctx.lengths[b]) - always, 0)))
        return kept
