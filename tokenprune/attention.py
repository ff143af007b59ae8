"""Attention rows recomputed from query/key projections.

Adapters project the few queries a method needs and the keys of one layer; these functions turn
them into scores, so no model has to run eager attention or return attention weights.
"""

from __future__ import annotations

import torch


def attention_logits(
    queries: torch.Tensor, keys: torch.Tensor, scale: float, key_mask: torch.Tensor
) -> torch.Tensor:
    """Scaled dot products (B, H, Q, L) in float32, -inf where `key_mask` (B, Q, L) is False.

    `keys` may have fewer heads than `queries` (grouped-query attention): each key head serves
    `H // H_kv` consecutive query heads, as in the models' own `repeat_kv`.
    """
    q_heads, kv_heads = queries.shape[1], keys.shape[1]
    if q_heads % kv_heads:
        raise ValueError(f"{q_heads} query heads cannot share {kv_heads} key heads evenly")
    keys = keys.float().repeat_interleave(q_heads // kv_heads, dim=1)
    logits = torch.matmul(queries.float(), keys.transpose(-1, -2)) * scale
    return logits.masked_fill(~key_mask[:, None], float("-inf"))


def head_mean_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over keys, averaged over heads and query rows: (B, H, Q, L) -> (B, L)."""
    return torch.softmax(logits, dim=-1).nan_to_num(0.0).mean(dim=(1, 2))


def cls_attention(cls_query: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of a [CLS] query over all tokens, summed over heads, [CLS] column dropped.

    cls_query: (B, H, 1, d); keys: (B, H, N + 1, d) with [CLS] first. Returns (B, N).
    """
    logits = torch.matmul(cls_query.float(), keys.float().transpose(-1, -2)) * scale
    return torch.softmax(logits, dim=-1).sum(dim=1)[:, 0, 1:]


def mean_attention_received(queries: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean attention each token receives from all queries of a bidirectional layer, head-averaged.

    For towers without a [CLS] token. queries, keys: (B, H, N, d). Returns (B, N).
    """
    logits = torch.matmul(queries.float(), keys.float().transpose(-1, -2)) * scale
    return torch.softmax(logits, dim=-1).mean(dim=(1, 2))
