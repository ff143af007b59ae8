"""tokenprune: cut visual tokens, prefill tokens and retrieved context without retraining.

import tokenprune as tp
with tp.apply(model, tp.DivPrune(budget=64)) as run:
    model.generate(**inputs)
run.stats
"""

from tokenprune.apply import PruneHandle, apply
from tokenprune.compose import Composed, compose
from tokenprune.pruners import (
    DivPrune,
    FastV,
    Feather,
    FoPru,
    GemFilter,
    LayerPruner,
    LazySkip,
    PrefillPruner,
    PreLLMPruner,
    Pruner,
    RandomPrune,
    SplitByArea,
    UniformPrune,
    VisionZip,
)
from tokenprune.stats import PruneRecord, RunStats

__all__ = [
    "Composed",
    "DivPrune",
    "FastV",
    "Feather",
    "FoPru",
    "GemFilter",
    "LayerPruner",
    "LazySkip",
    "PreLLMPruner",
    "PrefillPruner",
    "PruneHandle",
    "PruneRecord",
    "Pruner",
    "RandomPrune",
    "RunStats",
    "SplitByArea",
    "UniformPrune",
    "VisionZip",
    "apply",
    "compose",
]
__version__ = "0.1.0"
