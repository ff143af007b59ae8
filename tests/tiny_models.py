"""Tiny random models built from configs (no downloads), shared by the test modules."""

from __future__ import annotations

import copy

import torch

from tokenprune.zoo import builders

IMAGE_TOKEN = 127
VOCAB = 128
LAYERS = 4


# sizes shared by the tiny models: a 4-layer, 64-wide decoder with grouped-query attention and a
# 3-layer, 32-wide vision tower
TEXT = dict(
    vocab=VOCAB,
    hidden=64,
    ffn=128,
    layers=LAYERS,
    heads=4,
    kv_heads=2,
    max_positions=512,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
TOWER = dict(hidden=32, ffn=64, layers=3, heads=4)
# LLaVA's own defaults, spelled out because the tests depend on them
LLAVA_FEATURES = dict(
    vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu"
)


def tiny_llava(seed: int = 0, image_size: int = 84, patch_size: int = 14, attn: str = "sdpa"):
    """LLaVA-1.5 geometry in miniature: CLIP tower (CLS + (image_size/patch_size)^2 patches), layer -2 features."""
    return builders.llava(
        seed=seed,
        attn=attn,
        vision=dict(TOWER, image_size=image_size, patch_size=patch_size, projection_dim=32),
        text=TEXT,
        image_token=IMAGE_TOKEN,
        **LLAVA_FEATURES,
    )


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
    pixel_values = torch.randn(
        len(rows) * n_images_per_prompt, 3, vision.image_size, vision.image_size, generator=generator
    )
    return {**left_pad(rows), "pixel_values": pixel_values}


def tiny_causal_lm(family: str, seed: int = 0, attn: str = "sdpa", **sizes):
    """A causal LM of `family` with the TEXT sizes (or `sizes` in their place)."""
    model = builders.causal_lm(family, seed=seed, attn=attn, **{**TEXT, **sizes})
    model.generation_config.eos_token_id = None  # random weights: compare full-length greedy runs
    return model


def padded_batch(lengths=(40, 31), seed=0):
    """A left-padded batch of random text prompts of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    return left_pad([torch.randint(3, VOCAB, (n,), generator=generator).tolist() for n in lengths])


def left_pad(rows: list[list[int]]) -> dict:
    """input_ids and attention_mask of token rows, left-padded to the longest with pad id 0."""
    width = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, width - len(r) :] = torch.tensor(r)
        attention_mask[b, width - len(r) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def language_model_positions(model, call) -> list:
    """The position_ids a VLM's language model receives in each forward `call()` runs."""
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda m, a, k: seen.append(k.get("position_ids")), with_kwargs=True
    )
    try:
        call()
    finally:
        hook.remove()
    return seen


def eager_weights_and_recomputed_rows(model, input_ids, mask, positions, layer: int):
    """A VLM language model's attention weights at `layer` under eager attention (the reference), and
    the RecomputedRows tokenprune builds there from the SDPA model's hidden states."""
    from tokenprune.adapters.transformers.decoder import DecoderStack, RecomputedRows

    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    lm = model.model.language_model
    with torch.no_grad():
        embeds = model.model.get_input_embeddings()(input_ids)
        weights = eager.model.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, output_attentions=True
        ).attentions[layer]
        captured = {}
        hook = lm.layers[layer].register_forward_pre_hook(
            lambda m, a, k: captured.update(hidden=a[0], pos=k["position_embeddings"]), with_kwargs=True
        )
        lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
        hook.remove()
    return weights, RecomputedRows(DecoderStack(lm), layer, captured["hidden"], captured["pos"], mask.bool())
