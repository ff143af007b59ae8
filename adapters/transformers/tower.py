"""In-tower pruning for CLIP- and SigLIP-style vision encoders: forward pre-hooks on the encoder
blocks shorten the hidden states before the blocks a TowerPruner steps at, and hand later blocks the
tokens' log sizes as an additive attention mask (proportional attention after merges)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from tokenprune.adapters.transformers.base import SelectionLog
from tokenprune.pruners.base import TowerPruner, TowerTokens
from tokenprune.pruners.tower import merge_tokens
from tokenprune.stats import RunStats


@dataclass
class TowerRun:
    """What one pass of the tower did: per step, its block, the tokens before, the kept patch indices
    (images, K) into the original patch grid, and the seconds the step took; `origins` (images, K)
    are the survivors' indices after the last step."""

    steps: list[tuple[int, int, torch.Tensor, float]]
    origins: torch.Tensor


# rows of logits per softmax call in block_attention: a cache-sized temporary
SOFTMAX_ROWS = 256


def clip_queries_keys(block, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Queries and keys (B, H, N, d) of a transformers CLIP/SigLIP encoder block, and its scale."""
    attention = block.self_attn
    x = block.layer_norm1(hidden)
    shape = (*x.shape[:2], attention.num_heads, attention.head_dim)
    queries = attention.q_proj(x).view(shape).transpose(1, 2)
    keys = attention.k_proj(x).view(shape).transpose(1, 2)
    return queries, keys, attention.scale


def clip_mean_keys(block, hidden: torch.Tensor) -> torch.Tensor:
    """The keys (B, N, d) of a transformers CLIP/SigLIP encoder block averaged over its heads, projected
    with the head-averaged key weights (averaging is linear): 1/heads of the key projection's work."""
    attention = block.self_attn
    heads, width = attention.num_heads, attention.head_dim
    projection = attention.k_proj
    weight = projection.weight.view(heads, width, -1).mean(0)
    bias = None if projection.bias is None else projection.bias.view(heads, width).mean(0)
    return torch.nn.functional.linear(block.layer_norm1(hidden), weight, bias)


def block_attention(queries: torch.Tensor, keys: torch.Tensor, scale: float, bias: torch.Tensor | None):
    """The attention probabilities (B, H, N, N) recomputed from q/k with the additive key `bias`
    (B, N), in float32. The softmax overwrites the logits in place, a block of rows at a time: one
    N x N buffer instead of three (allocating large buffers costs about as much as filling them).
    Each row's maximum and sum are taken before it is written, so writing over the input is exact."""
    logits = torch.matmul(queries.float() * scale, keys.float().transpose(-1, -2))
    if bias is not None:
        logits += bias[:, None, None, :]
    for rows in logits.view(-1, logits.shape[-1]).split(SOFTMAX_ROWS):
        torch.softmax(rows, dim=-1, out=rows)
    return logits


class TowerEngine:
    """Runs `pruner` inside an encoder whose first `depth` `blocks` feed the selected features, for
    images of `patches` patch tokens behind `protected` leading tokens ([CLS]).

    `project(block, hidden)` gives a block's queries, keys and scale, `mean_keys(block, hidden)` its
    head-averaged keys, for pruners that need no attention (transformers' CLIP/SigLIP blocks by
    default); `masks`: whether the blocks take an additive attention mask as their second argument
    (needed once tokens merge: proportional attention)."""

    def __init__(
        self,
        pruner: TowerPruner,
        blocks,
        depth: int,
        patches: int,
        protected: int,
        project=clip_queries_keys,
        mean_keys=clip_mean_keys,
        masks: bool = True,
    ) -> None:
        self.project = project
        self.mean_keys = mean_keys
        self.masks = masks
        self.pruner = pruner
        self.blocks = blocks
        self.depth = depth
        self.patches = patches
        self.protected = protected
        self.schedule = dict(pruner.schedule(patches, depth))
        self.first = min(self.schedule)
        self.run: TowerRun | None = None
        self._origins = self._sizes = None
        self._steps: list = []

    def install(self, adapter) -> None:
        for index in range(self.first, self.depth):
            adapter.hook_before(self.blocks[index], self._hook(index))

    def _hook(self, index: int):
        def hook(module, args, kwargs):
            return self._before_block(index, module, args, kwargs)

        return hook

    def _before_block(self, index, block, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        if index == self.first:
            if mask is not None:
                raise ValueError("in-tower pruning runs on vision towers without an attention mask")
            if hidden.shape[1] != self.patches + self.protected:
                raise ValueError(
                    f"the tower received {hidden.shape[1]} tokens, expected {self.patches + self.protected}"
                )
            batch = hidden.shape[0]
            origins = torch.arange(-self.protected, self.patches, device=hidden.device)
            self._origins = origins.expand(batch, -1)
            self._sizes = torch.ones(batch, hidden.shape[1], device=hidden.device)
            self._steps = []
            self.run = None
        elif self._origins is None or hidden.shape[1] != self._origins.shape[1]:
            raise RuntimeError("the vision tower ran its blocks out of order; in-tower pruning cannot follow")
        if index in self.schedule:
            hidden = self._step(index, block, hidden)
        if index == self.depth - 1:
            self.run = TowerRun(self._steps, self._origins[:, self.protected :])
        bias = self._bias(hidden.dtype)
        if bias is None and index not in self.schedule:
            return None
        if not self.masks:
            if bias is not None:
                raise ValueError(f"{self.pruner.name} merges tokens, which this tower cannot weight by size")
            return (hidden, *args[1:]), {k: v for k, v in kwargs.items() if k != "hidden_states"}
        rest = args[2:]
        kwargs = {k: v for k, v in kwargs.items() if k not in ("hidden_states", "attention_mask")}
        return (hidden, bias, *rest), kwargs

    def _bias(self, dtype) -> torch.Tensor | None:
        """log(size) added to every query's logits for each key: proportional attention."""
        if bool((self._sizes == 1).all()):
            return None
        return self._sizes.log().to(dtype)[:, None, None, :]

    def _step(self, index: int, block, hidden: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        with torch.no_grad():
            if "attention" in self.pruner.needs:
                bias = None if bool((self._sizes == 1).all()) else self._sizes.log()
                queries, keys, scale = self.project(block, hidden)
                attention = block_attention(queries, keys, scale, bias)
                keys = keys.mean(dim=1)
            else:
                attention, keys = None, self.mean_keys(block, hidden)
            tokens = TowerTokens(index, self.depth, keys, self._sizes, self.protected, attention)
            step = self.pruner.step(tokens, self.schedule[index])
            hidden, self._sizes = merge_tokens(hidden, self._sizes, step)
        before = self._origins.shape[1] - self.protected
        self._origins = self._origins.gather(1, step.kept)
        kept = self._origins[:, self.protected :]
        self._steps.append((index, before, kept, time.perf_counter() - started))
        return hidden

    def take_run(self, images: int) -> TowerRun:
        """The last complete pass of the tower, over `images` images, once."""
        run, self.run = self.run, None
        if run is None or len(run.origins) != images:
            raise ValueError(
                "in-tower pruning needs the images encoded while the pruner is applied (pass pixel_values)"
            )
        return run

    def record(self, run: TowerRun, stats: RunStats, image: int, sample: int, group: int, grid) -> None:
        """One record per step for `image` of the run, as group `group` of `sample`."""
        images = len(run.origins)
        for layer, before, kept, seconds in run.steps:
            log = SelectionLog(stats, "in_tower", self.pruner.name, layer)
            log.add(sample, group, before, kept[image], grid, seconds / images)
