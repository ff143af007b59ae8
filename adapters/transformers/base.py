"""What every transformers adapter shares: the pruner stages it accepts and hook bookkeeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from tokenprune.compose import Composed
from tokenprune.pruners.base import VisualTokens
from tokenprune.stats import PruneRecord, RunStats


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
    ) -> torch.Tensor:
        """Run the pre-LLM pruner on one image (or video) whose tokens sit at `positions` of `sample`:
        clear the dropped positions in `keep` (B, L), write merged features into `embeds`, record the
        stats. Returns the kept indices (into the group's own token order)."""
        pruner = self.pruner.at("pre_llm")
        started = time.perf_counter()
        selection = pruner.select(tokens)
        seconds = time.perf_counter() - started
        dropped = torch.ones(len(positions), dtype=torch.bool, device=keep.device)
        dropped[selection.indices] = False
        keep[sample, positions[dropped]] = False
        if selection.features is not None:
            embeds[sample, positions[selection.indices]] = selection.features.to(embeds.dtype)
        self.stats.records.append(
            PruneRecord(
                stage="pre_llm",
                method=pruner.name,
                sample=sample,
                group=group,
                tokens_before=len(tokens),
                tokens_after=len(selection.indices),
                kept_indices=tuple(selection.indices.tolist()),
                grid=grid,
                seconds=seconds,
            )
        )
        return selection.indices

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
