"""What every pruner shares: a validated budget, a position policy, and the inputs it selects from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar, Literal, Protocol

import torch

from tokenprune.budget import resolve_budget, validate_budget

Positions = Literal["keep", "reindex"]
POSITIONS = ("keep", "reindex")
# what a pre-LLM pruner may need from the vision tower (captured while images are encoded)
VISION_NEEDS = frozenset({"attention", "keys", "pre_projection"})


@dataclass
class Pruner:
    """Base of all pruners.

    budget: tokens to keep per image (or per prompt for prefill skipping), as an int, or a fraction
    in (0, 1] of the tokens available. positions: "keep" gives kept tokens their original position
    ids (decoding continues after the unpruned length); "reindex" renumbers them contiguously.
    """

    budget: int | float
    positions: Positions = "keep"

    stage: ClassVar[str]

    def __post_init__(self) -> None:
        self.budget = validate_budget(self.budget)
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")

    @property
    def name(self) -> str:
        return type(self).__name__

    def keep_count(self, available: int) -> int:
        return resolve_budget(self.budget, available)


@dataclass
class VisualTokens:
    """The visual tokens of one image (or video) as the language model would receive them.

    features: (N, D) tokens after the projector. grid: (h, w) or (t, h, w), prod(grid) == N, tokens in
    row-major grid order. attention: (N,) significance from the vision tower ([CLS] attention or mean
    attention received), present when the pruner asks for it. keys: (N, d) head-averaged vision keys
    of that layer. pre_projection / project: the tokens before the projector and the projector itself,
    for methods that merge tokens where the original method does. text: (T, D) the language model's
    input embeddings of the instruction (the prompt's text tokens after the image, or all of its text
    tokens when the image ends the prompt), for question-aware methods.
    """

    features: torch.Tensor
    grid: tuple[int, ...]
    attention: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    pre_projection: torch.Tensor | None = None
    project: Callable[[torch.Tensor], torch.Tensor] | None = None
    text: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.features.shape[0]


@dataclass
class Selection:
    """Kept token indices (ascending, into the original grid order) and, for merging methods,
    the features that replace the kept tokens (k, D)."""

    indices: torch.Tensor
    features: torch.Tensor | None = None


class PreLLMPruner(Pruner):
    """Selects visual tokens before they enter the language model."""

    stage: ClassVar[str] = "pre_llm"
    #: what the adapter must provide in VisualTokens besides features:
    #: {"attention", "keys", "pre_projection", "text"}
    needs: ClassVar[frozenset[str]] = frozenset()

    def select(self, tokens: VisualTokens) -> Selection:
        raise NotImplementedError

    def with_budget(self, budget: int | float) -> PreLLMPruner:
        """This pruner keeping `budget` instead; wrappers pass the budget on to the pruner they wrap."""
        return replace(self, budget=budget)


class AttentionRows(Protocol):
    """Attention logits of one decoder layer, recomputed for the last query tokens of each sample."""

    def logits(self, window: int = 1, rope: bool = True) -> torch.Tensor:
        """(B, H, window, L) scaled q.k for the last `window` real tokens, -inf on padding and future keys."""
        ...

    def keys(self, rope: bool = True) -> torch.Tensor:
        """(B, H_kv, L, d) keys of every token, as the layer's attention computes them."""
        ...


@dataclass
class LayerContext:
    """What an in-LLM pruner sees just before decoder layer `layer` runs.

    groups[b][g]: current sequence positions of group g of sample b (an image's tokens, or the
    prunable prompt tokens); origins[b][g]: the same tokens' original indices (patch-grid order);
    grids[b][g]: the group's original grid, or None for text. attention: rows of layer `layer - 1`.
    states(): the hidden states entering `layer` (B, L, D) after the text model's final norm.
    """

    layer: int
    step: int
    attention: AttentionRows
    groups: list[list[torch.Tensor]]
    origins: list[list[torch.Tensor]]
    grids: list[list[tuple[int, ...] | None]]
    valid: torch.Tensor
    states: Callable[[], torch.Tensor] | None = None


class LayerPruner(Pruner):
    """Drops tokens from the hidden states before some decoder layers; later layers run shorter."""

    stage: ClassVar[str] = "llm"

    def layers(self) -> tuple[int, ...]:
        """Decoder layers (ascending, >= 1) before which this pruner selects."""
        raise NotImplementedError

    def select_layer(self, ctx: LayerContext) -> list[list[torch.Tensor]]:
        """Per sample, per group: kept positions local to the group (ascending)."""
        raise NotImplementedError

    def for_depth(self, num_layers: int) -> LayerPruner:
        """This pruner for a decoder of `num_layers` layers; pruners whose layers are given relative to
        the depth return a copy with layer indices."""
        return self

    def check_layers(self, num_layers: int) -> None:
        layers = self.layers()
        if any(b <= a for a, b in zip(layers, layers[1:])):
            raise ValueError(f"{self.name}: layers must be strictly increasing, got {list(layers)}")
        if layers and not (layers[0] >= 1 and layers[-1] < num_layers):
            raise ValueError(f"{self.name}: layers must lie in [1, {num_layers - 1}], got {list(layers)}")


@dataclass
class TowerTokens:
    """The tokens of a batch of images entering vision-tower block `layer` of `depth` (the blocks that
    feed the features the language model reads).

    keys: (B, N, d) the block's keys averaged over heads (rotated where the tower rotates them).
    attention: (B, H, N, N) the block's attention probabilities (rows sum to 1, proportional to token
    sizes), present when the pruner's `needs` name it. sizes: (B, N) how many patches each token
    stands for (tokens merged earlier count more). The first `protected` tokens ([CLS]) are never
    removed.
    """

    layer: int
    depth: int
    keys: torch.Tensor
    sizes: torch.Tensor
    protected: int = 0
    attention: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.keys.shape[1]


@dataclass
class TowerStep:
    """What one in-tower step does to a batch of N tokens: `kept` (B, K) ascending token indices that
    continue, and `into` (B, N) the slot in `kept` each token goes to (its own slot for a kept token,
    another kept token's slot for a merged one, -1 for a dropped one). Merged tokens are averaged,
    weighted by their sizes."""

    kept: torch.Tensor
    into: torch.Tensor


class TowerPruner(Pruner):
    """Removes or merges image tokens between the blocks of the vision tower; later blocks run
    shorter and the language model receives the survivors.

    budget: patch tokens (not counting [CLS]) left after the last step, per image. layers: tower
    blocks (0-based) before which a step runs; None takes the method's default for the tower depth.
    """

    stage: ClassVar[str] = "in_tower"
    #: what the adapter must provide in TowerTokens besides keys and sizes: {"attention"}
    needs: ClassVar[frozenset[str]] = frozenset()
    layers: tuple[int, ...] | None

    def default_layers(self, depth: int) -> tuple[int, ...]:
        raise NotImplementedError

    def tower_layers(self, depth: int) -> tuple[int, ...]:
        """The blocks this pruner steps before, in a tower whose first `depth` blocks feed the features."""
        layers = tuple(self.layers) if self.layers is not None else self.default_layers(depth)
        if not layers or any(b <= a for a, b in zip(layers, layers[1:])):
            raise ValueError(f"{self.name}: layers must be non-empty and strictly increasing, got {layers}")
        if not (layers[0] >= 0 and layers[-1] < depth):
            raise ValueError(
                f"{self.name}: layers must lie in [0, {depth - 1}] (the blocks before the selected "
                f"features), got {list(layers)}"
            )
        return layers

    def schedule(self, available: int, depth: int) -> tuple[tuple[int, int], ...]:
        """(block, patch tokens left after its step) for an image of `available` patch tokens; the
        last count is the budget."""
        raise NotImplementedError

    def step(self, tokens: TowerTokens, keep: int) -> TowerStep:
        """Reduce the unprotected tokens of every image to `keep`."""
        raise NotImplementedError
