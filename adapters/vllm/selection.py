"""Run a tokenprune selection on one image's encoder output inside a vLLM model."""

from __future__ import annotations

import logging
import time

import torch

from tokenprune.adapters.vllm.config import PruneConfig
from tokenprune.pruners import Selection, VisualTokens

# A child of vLLM's logger, so the stats reach vLLM's log handler (VLLM_LOGGING_LEVEL=DEBUG).
logger = logging.getLogger("vllm.tokenprune")


def select_rows(config: PruneConfig, tokens: VisualTokens, label: str) -> torch.Tensor:
    """Kept row indices (ascending) of `tokens.features`; exactly `config.keep_count(len(tokens))`
    of them, which is the placeholder count the processor gave this image."""
    selection = _select(config, tokens, label)
    if selection.features is not None:
        raise RuntimeError(
            f"tokenprune: {config.method} merges tokens, which this model's vLLM integration does not support"
        )
    return selection.indices


def select_embeddings(config: PruneConfig, tokens: VisualTokens, label: str) -> torch.Tensor:
    """The embeddings that fill this image's placeholders: the kept rows, or a merging method's
    features (families with 1-D positions, where a merged token's position is its slot)."""
    selection = _select(config, tokens, label)
    if selection.features is not None:
        return selection.features.to(tokens.features.dtype)
    return tokens.features[selection.indices]


def _select(config: PruneConfig, tokens: VisualTokens, label: str) -> Selection:
    natural = len(tokens)
    expected = config.keep_count(natural)
    started = time.perf_counter()
    selection = config.pruner.select(tokens)
    seconds = time.perf_counter() - started
    indices = selection.indices.to(tokens.features.device)
    if len(indices) != expected:
        raise RuntimeError(
            f"tokenprune: {config.method} kept {len(indices)} tokens of {label}, but the prompt has "
            f"{expected} placeholders for it"
        )
    logger.debug(
        "tokenprune %s: %s grid %s: %d -> %d tokens (%.2f ms)",
        config.method,
        label,
        "x".join(map(str, tokens.grid)),
        natural,
        expected,
        seconds * 1e3,
    )
    return Selection(indices, selection.features)
