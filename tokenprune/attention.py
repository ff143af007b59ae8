"""Attention rows recomputed from query/key projections.

Adapters project the few queries a method needs and the keys of one layer; these functions turn
them into scores, so no model has to run eager attention or return attention weights.
"""

from __future__ import annotations

import torch

# logits computed at once in mean_attention_received: one head's block of query rows on CPU (4 MiB in
# float32, the fastest on a 4,092-patch Qwen2.5-VL image: 1 MiB and 16 MiB blocks took about 25 % and
# 30 % longer), all heads' on accelerators (256 MiB)
QUERY_BLOCK_ELEMENTS = 1 << 20
DEVICE_QUERY_BLOCK_ELEMENTS = 1 << 26


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


@torch.no_grad()
def mean_attention_received(queries: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean attention each token receives from all queries of a bidirectional layer, head-averaged.

    For towers without a [CLS] token. queries: (B, H, Q, d), keys: (B, H, N, d). Returns (B, N) float32.
    Exact softmax maths without an N x N matrix (see `attention_received_in_blocks`): on CPU one head
    and a cache-sized block of query rows at a time; on accelerators all heads and large blocks, so
    few kernels are launched.
    """
    if queries.device.type == "cpu":
        return attention_received_in_blocks(queries, keys, scale, 1, QUERY_BLOCK_ELEMENTS)
    return attention_received_in_blocks(queries, keys, scale, queries.shape[1], DEVICE_QUERY_BLOCK_ELEMENTS)


def attention_received_in_blocks(
    queries: torch.Tensor, keys: torch.Tensor, scale: float, heads_per_step: int, block_elements: int
) -> torch.Tensor:
    """mean_attention_received over `heads_per_step` heads and as many query rows as fit
    `block_elements` logits at a time: one fused row softmax per block, summed over its rows."""
    batch, heads, rows, _ = queries.shape
    length = keys.shape[2]
    block = max(16, block_elements // (heads_per_step * length))
    received = torch.zeros(batch, length, dtype=torch.float64, device=queries.device)
    for b in range(batch):
        for head in range(0, heads, heads_per_step):
            scaled = queries[b, head : head + heads_per_step].float() * scale  # (h, Q, d)
            keys_t = keys[b, head : head + heads_per_step].float().transpose(-1, -2)  # (h, d, N)
            for start in range(0, rows, block):
                weights = torch.softmax(scaled[:, start : start + block] @ keys_t, dim=-1)  # (h, rows, N)
                received[b] += weights.sum(dim=(0, 1))
    return (received / (heads * rows)).float()
