"""What every transformers adapter shares: the pruner stages it accepts and hook bookkeeping."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from torch import nn

from tokenprune.compose import Composed
from tokenprune.stats import RunStats


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

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
