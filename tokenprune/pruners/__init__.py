"""Pruning methods: tensors in, kept indices out."""

from tokenprune.pruners.adaptive import Adaptive, AdaptiveLayer, Ranking
from tokenprune.pruners.base import (
    LayerContext,
    LayerPruner,
    PreLLMPruner,
    Pruner,
    Selection,
    TowerPruner,
    TowerStep,
    TowerTokens,
    VisualTokens,
)
from tokenprune.pruners.baselines import RandomPrune, UniformPrune
from tokenprune.pruners.cdpruner import CDPruner
from tokenprune.pruners.dart import DART
from tokenprune.pruners.divprune import DivPrune
from tokenprune.pruners.downsample import Downsample
from tokenprune.pruners.fastv import FastV, Feather
from tokenprune.pruners.fopru import FoPru
from tokenprune.pruners.prefill import GemFilter, LazySkip, PrefillPruner, PromptContext
from tokenprune.pruners.recycle import Recycle
from tokenprune.pruners.scored import ScoredLayerPruner, TokenGroup
from tokenprune.pruners.tower import ToMe, ZeroTPrune
from tokenprune.pruners.views import SplitByArea, ViewTokens
from tokenprune.pruners.visionzip import VisionZip

__all__ = [
    "Adaptive",
    "AdaptiveLayer",
    "CDPruner",
    "DART",
    "Downsample",
    "Ranking",
    "Recycle",
    "DivPrune",
    "FastV",
    "Feather",
    "FoPru",
    "GemFilter",
    "LayerContext",
    "LayerPruner",
    "LazySkip",
    "PreLLMPruner",
    "PrefillPruner",
    "PromptContext",
    "Pruner",
    "RandomPrune",
    "ScoredLayerPruner",
    "Selection",
    "SplitByArea",
    "TokenGroup",
    "ToMe",
    "TowerPruner",
    "TowerStep",
    "TowerTokens",
    "UniformPrune",
    "ViewTokens",
    "VisionZip",
    "VisualTokens",
    "ZeroTPrune",
]
