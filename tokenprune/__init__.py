"""tokenprune: cut visual tokens, prefill tokens and retrieved context without retraining.

import tokenprune as tp
with tp.apply(model, tp.DivPrune(budget=64)) as run:
    model.generate(**inputs)
run.stats
"""

import importlib
import sys
import types

# Names exported here, and the module defining each. They are imported on first use, so that
# torch-free parts (tokenprune.context, the prune-html CLI) start without importing torch.
_EXPORTS = {
    "apply": "tokenprune.apply",
    "PruneHandle": "tokenprune.apply",
    "compose": "tokenprune.compose",
    "Composed": "tokenprune.compose",
    "PruneRecord": "tokenprune.stats",
    "RunStats": "tokenprune.stats",
    **dict.fromkeys(
        (
            "DivPrune",
            "FastV",
            "Feather",
            "FoPru",
            "GemFilter",
            "LayerPruner",
            "LazySkip",
            "PrefillPruner",
            "PreLLMPruner",
            "Pruner",
            "RandomPrune",
            "ScoredLayerPruner",
            "SplitByArea",
            "UniformPrune",
            "VisionZip",
            "ToMe",
            "TowerPruner",
            "ZeroTPrune",
            "Adaptive",
            "AdaptiveLayer",
            "CDPruner",
            "DART",
            "Downsample",
            "Recycle",
        ),
        "tokenprune.pruners",
    ),
}
__all__ = sorted(_EXPORTS)
# what the `models` extra installs; context pruning runs without them
_MODEL_SIDE = ("torch", "transformers")
__version__ = "0.1.0"


class _Package(types.ModuleType):
    def __getattr__(self, name: str):
        if name not in _EXPORTS:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        try:
            module = importlib.import_module(_EXPORTS[name])
        except ModuleNotFoundError as missing:
            if missing.name not in _MODEL_SIDE:
                raise
            raise ModuleNotFoundError(
                f"tokenprune.{name} needs {missing.name}, which the core install leaves out: "
                "pip install 'tokenprune[models]'",
                name=missing.name,
            ) from missing
        value = getattr(module, name)
        setattr(self, name, value)
        return value

    def __setattr__(self, name: str, value) -> None:
        # Importing a submodule binds it on its package; the functions apply() and compose() keep
        # their names even when their modules (tokenprune.apply, tokenprune.compose) load later.
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == f"{self.__name__}.{name}":
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *_EXPORTS})


sys.modules[__name__].__class__ = _Package
