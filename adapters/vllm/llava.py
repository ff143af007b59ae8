"""LLaVA-1.5 in vLLM with fewer image tokens: `TokenPruneLlavaForConditionalGeneration`.

The processor gives each image min(budget, natural) placeholders (Downsample: its pooled count), so
scheduling, profiling and KV usage follow the pruned count; the model returns exactly that many
projector outputs per image, in original order (Downsample: the pooled cells, row by row). LLaVA uses 1-D RoPE, so contiguous positions over the shorter prompt are all the
language model needs.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import CLIPVisionConfig, SiglipVisionConfig
from vllm.distributed import tensor_model_parallel_all_reduce
from vllm.model_executor.models.llava import (
    LlavaDummyInputsBuilder,
    LlavaForConditionalGeneration,
    LlavaMultiModalProcessor,
    LlavaProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from tokenprune.adapters.transformers.tower import TowerEngine
from tokenprune.adapters.vllm.config import LLAVA_METHODS, PruneConfig, parse_config, square_grid
from tokenprune.adapters.vllm.selection import select_embeddings
from tokenprune.attention import cls_attention
from tokenprune.pruners import VisualTokens

FAMILY = "LLaVA"


def llava_prune_config(hf_config) -> PruneConfig:
    """Validate that this LLaVA checkpoint can be pruned with the requested method."""
    vision = hf_config.vision_config
    if not isinstance(vision, (CLIPVisionConfig, SiglipVisionConfig)):
        raise ValueError(
            f"tokenprune supports LLaVA with CLIP or SigLIP vision towers in vLLM, got {type(vision).__name__}"
        )
    config = parse_config(hf_config, FAMILY, LLAVA_METHODS)
    if config.in_tower:
        if not isinstance(vision, CLIPVisionConfig) or hf_config.vision_feature_select_strategy != "default":
            raise ValueError(
                f"tokenprune: {config.method} prunes inside the tower, which in vLLM needs a CLIP tower with "
                "vision_feature_select_strategy='default'"
            )
    elif config.needs_vision_attention:
        if not isinstance(vision, CLIPVisionConfig) or hf_config.vision_feature_select_strategy != "default":
            raise ValueError(
                f"tokenprune: {config.method} ranks patches by [CLS] attention, which needs a CLIP tower with "
                "vision_feature_select_strategy='default'; use divprune, uniform or random for this checkpoint"
            )
        if not isinstance(hf_config.vision_feature_layer, int):
            raise ValueError(
                f"tokenprune: {config.method} needs a single vision_feature_layer, got "
                f"{hf_config.vision_feature_layer!r}"
            )
    return config


class TokenPruneLlavaProcessingInfo(LlavaProcessingInfo):
    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        natural = super().get_num_image_tokens(image_width=image_width, image_height=image_height)
        return llava_prune_config(self.get_hf_config()).keep_count(natural)


@contextmanager
def capture_cls_attention(encoder_layer, into: dict):
    """While active, store the [CLS]->patch attention (B, N), summed over all heads, of each forward
    of `encoder_layer`. It reuses the layer's own q/k projection output (vLLM's encoder attention
    never forms probabilities); under tensor parallelism each rank holds a slice of the heads, so the
    per-rank head sums are all-reduced."""
    attention = encoder_layer.self_attn

    def hook(module, args, output):
        qkv = output[0] if isinstance(output, tuple) else output
        batch, length, _ = qkv.shape
        query, key, _ = qkv.chunk(3, dim=-1)
        heads, head_dim = attention.num_heads_per_partition, attention.head_dim
        query = query[:, :1].reshape(batch, 1, heads, head_dim).transpose(1, 2)
        key = key.reshape(batch, length, heads, head_dim).transpose(1, 2)
        scores = cls_attention(query, key, attention.scale)
        if attention.tp_size > 1:
            # contiguous: the scores are a strided view, and vLLM's all-reduce kernels reduce the
            # flat buffer from its first element (the CPU build's shared-memory one did, on batches)
            scores = tensor_model_parallel_all_reduce(scores.contiguous())
        into["attention"] = scores

    handle = attention.qkv_proj.register_forward_hook(hook)
    try:
        yield into
    finally:
        handle.remove()


def clip_queries_keys(block, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Queries and keys (B, H, N, d) of a vLLM CLIP encoder layer, from its fused q/k/v projection."""
    attention = block.self_attn
    if attention.tp_size > 1:
        raise ValueError("tokenprune: in-tower pruning in vLLM runs without tensor parallelism")
    qkv, _ = attention.qkv_proj(block.layer_norm1(hidden))
    query, key, _ = qkv.chunk(3, dim=-1)
    shape = (*hidden.shape[:2], attention.num_heads_per_partition, attention.head_dim)
    return query.reshape(shape).transpose(1, 2), key.reshape(shape).transpose(1, 2), attention.scale


class _Hooks:
    """Forward pre-hooks registered for one tower call and removed after it."""

    def __init__(self) -> None:
        self.handles: list = []

    def hook_before(self, module, fn) -> None:
        self.handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextmanager
def pruning_tower(layers, pruner, patches: int):
    """While active, `pruner` (an in-tower method that drops tokens) shortens the hidden states
    between vLLM's CLIP encoder layers (built up to the feature layer, so all of them feed it)."""
    engine = TowerEngine(pruner, layers, len(layers), patches, 1, project=clip_queries_keys, masks=False)
    hooks = _Hooks()
    engine.install(hooks)
    try:
        yield engine
    finally:
        hooks.remove()


@MULTIMODAL_REGISTRY.register_processor(
    LlavaMultiModalProcessor, info=TokenPruneLlavaProcessingInfo, dummy_inputs=LlavaDummyInputsBuilder
)
class TokenPruneLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        self.tokenprune = llava_prune_config(vllm_config.model_config.hf_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)

    def _process_image_input(self, image_input):
        if image_input["type"] == "image_embeds":
            return super()._process_image_input(image_input)  # user-supplied embeddings: already sized
        if self.tokenprune.in_tower:
            config = self.config.vision_config
            patches = (config.image_size // config.patch_size) ** 2
            with pruning_tower(
                self.vision_tower.vision_model.encoder.layers, self.tokenprune.pruner, patches
            ):
                return tuple(super()._process_image_input(image_input))
        captured: dict = {}
        if self.tokenprune.needs_vision_attention:
            # The tower is built only up to the feature layer, so its last layer is that layer.
            with capture_cls_attention(self.vision_tower.vision_model.encoder.layers[-1], captured):
                embeds = super()._process_image_input(image_input)
        else:
            embeds = super()._process_image_input(image_input)
        kept = []
        for i, features in enumerate(embeds):
            tokens = VisualTokens(
                features=features,
                grid=square_grid(features.shape[0]),
                attention=captured["attention"][i] if captured else None,
            )
            kept.append(select_embeddings(self.tokenprune, tokens, f"image {i} of the batch"))
        return tuple(kept)
