"""`apply(model, pruner)`: attach a pruner to one model instance through forward hooks."""

from __future__ import annotations

import weakref

from tokenprune.compose import Composed, as_composed
from tokenprune.pruners.base import Pruner
from tokenprune.stats import RunStats

_active: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class PruneHandle:
    """The pruner attached to a model. Use as a context manager, or call `remove()`.

    stats: one record per pruned group (image, video or prompt) per stage per forward.
    """

    def __init__(self, model, adapter, pruner: Composed, stats: RunStats) -> None:
        self.model = model
        self.pruner = pruner
        self.stats = stats
        self._adapter = adapter

    @property
    def active(self) -> bool:
        return self._adapter is not None

    def remove(self) -> None:
        """Remove every hook this handle installed; the model is as it was before `apply`."""
        if self._adapter is None:
            return
        self._adapter.remove()
        self._adapter = None
        _active.pop(self.model, None)

    def __enter__(self) -> PruneHandle:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()


def apply(model, pruner: Pruner | Composed) -> PruneHandle:
    """Prune `model` with `pruner` until the returned handle is removed (or its `with` block ends).

    Only this model instance is touched. A model can carry one pruner at a time; combine stages
    with `tokenprune.compose(...)`.
    """
    if not isinstance(pruner, (Pruner, Composed)):
        raise TypeError(
            f"pruner must be a tokenprune pruner or compose(...) result, got {type(pruner).__name__}"
        )
    composed = as_composed(pruner)
    if model in _active:
        raise RuntimeError(
            "this model already has a pruner applied; remove it first, or combine stages with "
            "tokenprune.compose(pre_llm_pruner, in_llm_pruner)"
        )
    from tokenprune.adapters.transformers import compat, find_adapter

    adapter_class = find_adapter(model)
    compat.warn_if_untested(compat.installed_version())
    stats = RunStats()
    adapter = adapter_class(model, composed, stats)
    try:
        adapter.install()
    except BaseException:
        adapter.remove()
        raise
    handle = PruneHandle(model, adapter, composed, stats)
    _active[model] = handle
    return handle
