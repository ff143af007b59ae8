"""Configs and seeded random models of the families tokenprune adapts, from explicit sizes.

The tiny test models, the benchmark geometries, the reference models' architectures and the vLLM
test checkpoints are all built here. Sizes use short names (`hidden`, `ffn`, `layers`, `heads`, ...);
any other keyword is passed to the config unchanged. transformers is imported inside the functions:
importing tokenprune must not import it.
"""

from __future__ import annotations

import torch

CAUSAL_LMS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
}
QWEN_VL_PREFIXES = {"qwen2_vl": "Qwen2VL", "qwen2_5_vl": "Qwen2_5_VL", "qwen3_vl": "Qwen3VL"}


def decoder_fields(
    *, vocab: int, hidden: int, ffn: int, layers: int, heads: int, max_positions: int, kv_heads=None, **extra
) -> dict:
    """A decoder's config keyword arguments; `kv_heads` defaults to `heads` (no grouped-query attention)."""
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads if kv_heads is None else kv_heads,
        max_position_embeddings=max_positions,
        **extra,
    )


def tower_fields(
    *, hidden: int, ffn: int, layers: int, heads: int, image_size: int, patch_size: int, **extra
):
    """A ViT tower's config keyword arguments (CLIP and SigLIP name them alike)."""
    return dict(
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        **extra,
    )


def llama_config(**sizes):
    from transformers import LlamaConfig

    return LlamaConfig(**decoder_fields(**sizes))


def causal_lm_config(family: str, **sizes):
    """Mistral without a sliding window and Qwen3 with head size hidden / heads unless asked, so every
    family computes the same kind of function from the same sizes."""
    import transformers

    fields = decoder_fields(**sizes)
    if family == "mistral":
        fields.setdefault("sliding_window", None)
    if family == "qwen3":
        fields.setdefault("head_dim", fields["hidden_size"] // fields["num_attention_heads"])
    return getattr(transformers, CAUSAL_LMS[family][0])(**fields)


def clip_vision_config(**sizes):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**tower_fields(**sizes))


def siglip_vision_config(**sizes):
    """Without the attention-pooling head, which LLaVA-OneVision does not use."""
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(**tower_fields(**{"vision_use_head": False, **sizes}))


def llava_config(*, vision: dict, text: dict, image_token: int, **extra):
    """LLaVA-1.5: CLIP tower (`vision` sizes), MLP projector, Llama (`text` sizes)."""
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config=clip_vision_config(**vision),
        text_config=llama_config(**text),
        image_token_index=image_token,
        **extra,
    )


def llava_next_config(*, vision: dict, text: dict, image_token: int, pinpoints: list, **extra):
    """LLaVA-NeXT: CLIP tower, anyres crops on the `pinpoints` canvases, Llama."""
    from transformers import LlavaNextConfig

    return LlavaNextConfig(
        vision_config=clip_vision_config(**vision),
        text_config=llama_config(**text),
        image_token_index=image_token,
        image_grid_pinpoints=pinpoints,
        **extra,
    )


def llava_onevision_config(
    *, vision: dict, text: dict, image_token: int, video_token: int, pinpoints: list, **extra
):
    """LLaVA-OneVision: SigLIP tower, anyres crops on the `pinpoints` canvases, Qwen2."""
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        vision_config=siglip_vision_config(**vision),
        text_config=causal_lm_config("qwen2", **text),
        image_token_index=image_token,
        video_token_index=video_token,
        image_grid_pinpoints=pinpoints,
        **extra,
    )


def qwen_vision_fields(
    family: str,
    *,
    hidden: int,
    ffn: int,
    layers: int,
    heads: int,
    out: int,
    patch_size: int,
    temporal_patch_size: int,
    merge: int,
    **extra,
) -> dict:
    """A Qwen-VL vision tower whose merger projects to `out` (the language model's width)."""
    common = dict(
        depth=layers,
        num_heads=heads,
        patch_size=patch_size,
        temporal_patch_size=temporal_patch_size,
        spatial_merge_size=merge,
        **extra,
    )
    if family == "qwen2_vl":
        return dict(common, embed_dim=hidden, hidden_size=out, mlp_ratio=ffn // hidden)
    return dict(common, hidden_size=hidden, intermediate_size=ffn, out_hidden_size=out)


def mrope_section(head_dim: int) -> list[int]:
    """The rotary pairs of a head split temporal : height : width as 1 : 1.5 : 1.5, like Qwen's."""
    pairs = head_dim // 2
    temporal = pairs // 4
    height = (pairs - temporal) // 2
    return [temporal, height, pairs - temporal - height]


def qwen_vl_config(
    family: str,
    *,
    vision: dict,
    text: dict,
    image_token: int,
    video_token: int,
    vision_start: int,
    vision_end: int,
    rope_theta: float = 10000.0,
    **extra,
):
    """Qwen2-VL, Qwen2.5-VL or Qwen3-VL: `vision` sizes for `qwen_vision_fields`, `text` decoder sizes;
    M-RoPE over the text head (interleaved in Qwen3-VL, as there)."""
    import transformers

    text_fields = decoder_fields(**text)
    head_dim = text_fields.get("head_dim") or text_fields["hidden_size"] // text_fields["num_attention_heads"]
    rope = {"rope_type": "default", "rope_theta": rope_theta, "mrope_section": mrope_section(head_dim)}
    if family == "qwen3_vl":
        rope["mrope_interleaved"] = True
    return getattr(transformers, f"{QWEN_VL_PREFIXES[family]}Config")(
        vision_config=qwen_vision_fields(family, **vision),
        text_config=dict(text_fields, rope_parameters=rope),
        image_token_id=image_token,
        video_token_id=video_token,
        vision_start_token_id=vision_start,
        vision_end_token_id=vision_end,
        **extra,
    )


def random_model(model_class: str, config, seed: int = 0, attn: str = "sdpa"):
    """An eval-mode `transformers.<model_class>` with weights drawn after `torch.manual_seed(seed)`,
    running `attn` attention in every part of the model."""
    import transformers

    for part in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None)):
        if part is not None:
            part._attn_implementation = attn
    torch.manual_seed(seed)
    return getattr(transformers, model_class)(config).eval()


def causal_lm(family: str, *, seed: int = 0, attn: str = "sdpa", **sizes):
    return random_model(CAUSAL_LMS[family][1], causal_lm_config(family, **sizes), seed, attn)


def llava(*, seed: int = 0, attn: str = "sdpa", **config):
    return random_model("LlavaForConditionalGeneration", llava_config(**config), seed, attn)


def llava_next(*, seed: int = 0, attn: str = "sdpa", **config):
    return random_model("LlavaNextForConditionalGeneration", llava_next_config(**config), seed, attn)


def llava_onevision(*, seed: int = 0, attn: str = "sdpa", **config):
    return random_model(
        "LlavaOnevisionForConditionalGeneration", llava_onevision_config(**config), seed, attn
    )


def qwen_vl(family: str, *, seed: int = 0, attn: str = "sdpa", **config):
    model_class = f"{QWEN_VL_PREFIXES[family]}ForConditionalGeneration"
    return random_model(model_class, qwen_vl_config(family, **config), seed, attn)
