"""Tiny random models built from configs (no downloads), shared by the test modules."""

from __future__ import annotations

import torch

IMAGE_TOKEN = 127
VOCAB = 128
LAYERS = 4


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    values = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10000.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_vision_config(config_class, image_size: int, patch_size: int):
    """A 3-layer, 32-wide CLIP-style vision tower config shared by the tiny VLMs."""
    return config_class(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )


def tiny_llava(
    seed: int = 0, image_size: int = 84, patch_size: int = 14, attn: str = "sdpa", **text_overrides
):
    """LLaVA-1.5 geometry in miniature: CLIP tower (CLS + (image_size/patch_size)^2 patches), layer -2 features."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=tiny_vision_config(CLIPVisionConfig, image_size, patch_size),
        text_config=tiny_llama_config(**text_overrides),
        image_token_index=IMAGE_TOKEN,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    config._attn_implementation = attn
    model = LlavaForConditionalGeneration(config).eval()
    return model


def llava_inputs(model, prompts: list[tuple[int, int]], n_images_per_prompt: int = 1, seed: int = 0):
    """A left-padded batch: each prompt is (text tokens before the image, text tokens after)."""
    vision = model.config.vision_config
    per_image = (vision.image_size // vision.patch_size) ** 2
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for before, after in prompts:
        ids = [1] + torch.randint(3, IMAGE_TOKEN, (before,), generator=generator).tolist()
        for _ in range(n_images_per_prompt):
            ids += [IMAGE_TOKEN] * per_image
        ids += torch.randint(3, IMAGE_TOKEN, (after,), generator=generator).tolist()
        rows.append(ids)
    width = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, width - len(r) :] = torch.tensor(r)
        attention_mask[b, width - len(r) :] = 1
    pixel_values = torch.randn(
        len(rows) * n_images_per_prompt, 3, vision.image_size, vision.image_size, generator=generator
    )
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def tiny_causal_lm(family: str, seed: int = 0, attn: str = "sdpa", **overrides):
    import transformers

    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config_class, model_class = {
        "llama": ("LlamaConfig", "LlamaForCausalLM"),
        "mistral": ("MistralConfig", "MistralForCausalLM"),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    }[family]
    extra = {"sliding_window": None} if family == "mistral" else {}
    if family == "qwen3":
        extra["head_dim"] = 16
    config = getattr(transformers, config_class)(**{**common, **extra, **overrides})
    config._attn_implementation = attn
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config).eval()
    model.generation_config.eos_token_id = None  # random weights: compare full-length greedy runs
    return model


def padded_batch(lengths=(40, 31), seed=0):
    """A left-padded batch of random text prompts of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.zeros(len(lengths), width, dtype=torch.long)
    attention_mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for b, n in enumerate(lengths):
        input_ids[b, width - n :] = torch.randint(3, VOCAB, (n,), generator=generator)
        attention_mask[b, width - n :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
