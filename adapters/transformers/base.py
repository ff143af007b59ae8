"""What every transformers adapter shares: the pruner stages it accepts, hook bookkeeping, and the
helpers its pruning steps use to drop tokens, record selections and follow a pruned prefill into
decoding."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from tokenprune.adapters.transformers import compat
from tokenprune.compose import Composed
from tokenprune.pruners.base import VisualTokens
from tokenprune.stats import PruneRecord, RunStats


def drop_unselected(
    keep: torch.Tensor, sample: int, candidates: torch.Tensor, selected: torch.Tensor
) -> None:
    """Clear in `keep` (B, L) the `candidates` positions of `sample` that a pruner did not select;
    `selected` indexes `candidates`."""
    dropped = torch.ones(len(candidates), dtype=torch.bool, device=keep.device)
    dropped[selected] = False
    keep[sample, candidates[dropped]] = False


def text_rows(input_ids: torch.Tensor, media_ids, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L): the prompt's real text tokens, i.e. neither padding nor placeholders of `media_ids`."""
    rows = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    for token_id in media_ids:
        rows = rows & (input_ids != token_id)
    return rows


def instruction(embeds: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(T, D) input embeddings of one sample's instruction for the image at `positions`: its text
    tokens after the image, or all of its text tokens when the image ends the prompt. rows: (L,)
    text tokens of the sample (`text_rows`)."""
    after = rows & (torch.arange(len(rows), device=rows.device) > positions.max())
    return embeds[after] if bool(after.any()) else embeds[rows]


@dataclass(frozen=True)
class SelectionLog:
    """Appends a PruneRecord per selected group to `stats` for one pruner `stage` (and, for pruners
    that score inside the language model, the decoder `layer` they selected before)."""

    stats: RunStats
    stage: str
    method: str
    layer: int | None = None

    def add(
        self,
        sample: int,
        group: int,
        tokens_before: int,
        kept: torch.Tensor,
        grid: tuple[int, ...] | None,
        seconds: float,
    ) -> None:
        """`kept`: the group's kept tokens as indices into its original token order."""
        self.stats.records.append(
            PruneRecord(
                stage=self.stage,
                method=self.method,
                sample=sample,
                group=group,
                tokens_before=tokens_before,
                tokens_after=len(kept),
                kept_indices=tuple(kept.tolist()),
                grid=grid,
                seconds=seconds,
                layer=self.layer,
            )
        )


class PrefillTracker:
    """A pruned prefill's decode-time state (`prefill`) and the KV cache that prefill filled.

    A pruned prefill caches fewer tokens than the prompt has, so the decoding steps that read its
    cache need masks and positions in the prefill's coordinates; every other forward runs as is."""

    def __init__(self) -> None:
        self.prefill = None
        self.cache = None

    def cached_tokens(self, kwargs: dict) -> int:
        """Tokens already in the cache a forward reads; 0 makes it a prefill, which forgets the
        tracked one after checking that its cache was not passed under a name compat does not read."""
        past = compat.cached_length(kwargs)
        if past == 0:
            compat.check_cache_read(kwargs, self.cache)
            self.prefill, self.cache = None, None
        return past

    def continues(self, kwargs: dict) -> bool:
        """Whether a decoding step reads the tracked prefill's cache."""
        return self.prefill is not None and compat.cache_in(kwargs) is self.cache

    def decode_step(self, args: tuple, kwargs: dict, past: int) -> tuple[tuple, dict] | None:
        """A pre-hook's result for a decoding step: the inputs with the tracked prefill's
        `decode_kwargs` when the step continues it, else None (the forward runs unchanged)."""
        if not self.continues(kwargs):
            return None
        return args, {**kwargs, **self.prefill.decode_kwargs(kwargs, past)}

    def record_cache(self, output) -> None:
        """In the post-hook of the forward that made the tracked prefill: keep the cache it filled."""
        if self.prefill is not None and self.cache is None:
            self.cache = compat.cache_out(output)


class Adapter:
    """Installs forward hooks on one model instance and removes exactly those hooks again."""

    supported_stages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module, pruner: Composed, stats: RunStats) -> None:
        unsupported = [p.name for p in pruner.stages if p.stage not in self.supported_stages]
        if unsupported:
            raise ValueError(
                f"{type(model).__name__} supports pruners of stages {self.supported_stages}; "
                f"{', '.join(unsupported)} cannot run on it"
            )
        self.model = model
        self.pruner = pruner
        self.stats = stats
        self._hooks: list = []

    def hook_before(self, module: nn.Module, fn: Callable) -> None:
        self._hooks.append(module.register_forward_pre_hook(fn, with_kwargs=True))

    def hook_after(self, module: nn.Module, fn: Callable) -> None:
        self._hooks.append(module.register_forward_hook(fn, with_kwargs=True))

    def install(self) -> None:
        raise NotImplementedError

    def select_visual(
        self,
        tokens: VisualTokens,
        positions: torch.Tensor,
        keep: torch.Tensor,
        embeds: torch.Tensor,
        sample: int,
        group: int,
        grid: tuple[int, ...],
        text_mask: torch.Tensor | None = None,
        origins: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the pre-LLM pruner on one image (or video) whose tokens sit at `positions` of `sample`:
        clear the dropped positions in `keep` (B, L), write merged features into `embeds`, record the
        stats. Returns the kept indices (into the given tokens). text_mask: (B, L) the prompt's text
        tokens (`text_rows`), for pruners that need the instruction; `embeds` must still hold their input
        embeddings. `origins`: the tokens' indices in the group's own order when an in-tower stage left
        only some (None: all, in order)."""
        pruner = self.pruner.at("pre_llm")
        if "text" in pruner.needs:
            if text_mask is None:
                raise ValueError(f"{pruner.name} needs the instruction, which this adapter does not provide")
            tokens = replace(tokens, text=instruction(embeds[sample], text_mask[sample], positions))
        started = time.perf_counter()
        selection = pruner.select(tokens)
        seconds = time.perf_counter() - started
        drop_unselected(keep, sample, positions, selection.indices)
        if selection.features is not None:
            embeds[sample, positions[selection.indices]] = selection.features.to(embeds.dtype)
        log = SelectionLog(self.stats, "pre_llm", pruner.name)
        kept = selection.indices if origins is None else origins[selection.indices]
        log.add(sample, group, len(tokens), kept, grid, seconds)
        return selection.indices

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
