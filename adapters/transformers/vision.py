"""Vision-tower attention recomputed from q/k projections, for CLIP-style encoder layers (CLIP,
SigLIP: `layer_norm1`, `self_attn.q_proj/k_proj`, `num_heads`, `head_dim`, `scale`)."""

from __future__ import annotations

import torch

from tokenprune.attention import cls_attention, mean_attention_received


def feature_layer_index(vision_feature_layer: int | list[int], num_layers: int) -> int:
    """Encoder layer whose output is the selected hidden state (hidden_states[0] is the embedding)."""
    selected = (
        vision_feature_layer[-1] if isinstance(vision_feature_layer, (list, tuple)) else vision_feature_layer
    )
    index = selected if selected >= 0 else num_layers + 1 + selected
    if not 1 <= index <= num_layers:
        raise ValueError(f"vision_feature_layer {vision_feature_layer} selects no encoder layer's attention")
    return index - 1


def cls_attention_hook(into: dict):
    """A forward pre-hook for a CLIP encoder layer that stores into `into`: "attention" (B, N)
    [CLS]->patch attention summed over heads, and "keys" (B, N, d) head-averaged patch keys."""

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        attention = module.self_attn
        with torch.no_grad():
            x = module.layer_norm1(hidden)
            batch, length, _ = x.shape
            heads, head_dim = attention.num_heads, attention.head_dim
            query = attention.q_proj(x[:, :1]).view(batch, 1, heads, head_dim).transpose(1, 2)
            keys = attention.k_proj(x).view(batch, length, heads, head_dim).transpose(1, 2)
            into["attention"] = cls_attention(query, keys, attention.scale)
            into["keys"] = keys.mean(dim=1)[:, 1:]

    return hook


def mean_attention_hook(into: dict):
    """A forward pre-hook for a CLS-free encoder layer (SigLIP) that stores into `into`: "attention"
    (B, N) mean attention each token receives, and "keys" (B, N, d) head-averaged keys."""

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        attention = module.self_attn
        with torch.no_grad():
            x = module.layer_norm1(hidden)
            shape = (*x.shape[:2], attention.num_heads, attention.head_dim)
            queries = attention.q_proj(x).view(shape).transpose(1, 2)
            keys = attention.k_proj(x).view(shape).transpose(1, 2)
            into["attention"] = mean_attention_received(queries, keys, attention.scale)
            into["keys"] = keys.mean(dim=1)

    return hook


def split_runs(positions: torch.Tensor, run_length: int) -> list[torch.Tensor]:
    """Consecutive image-placeholder positions of one sample, one tensor per image."""
    if len(positions) % run_length:
        raise ValueError(
            f"found {len(positions)} image tokens, not a multiple of {run_length} tokens per image"
        )
    return list(positions.split(run_length))
