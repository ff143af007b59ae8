"""Tiny random LLaVA-NeXT and LLaVA-OneVision models from configs (no downloads), and prompts
with the placeholder counts the models expect."""

from __future__ import annotations

import sys

import torch

from tiny_models import IMAGE_TOKEN, tiny_llama_config, tiny_vision_config

VIDEO_TOKEN = 126
CROP = 42  # tower resolution: 6 x 6 patches of 7 pixels per crop
PINPOINTS = [[42, 84], [84, 42], [84, 84]]


def tiny_llava_next(seed: int = 0, attn: str = "sdpa"):
    """CLIP tower (with [CLS]), layer -2 features, anyres with up to 2 x 2 crops, Llama text model."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    torch.manual_seed(seed)
    vision = tiny_vision_config(CLIPVisionConfig, CROP, 7)
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=tiny_llama_config(),
        image_token_index=IMAGE_TOKEN,
        image_grid_pinpoints=PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    config._attn_implementation = attn
    return LlavaNextForConditionalGeneration(config).eval()


def tiny_llava_onevision(seed: int = 0, attn: str = "sdpa", aspect_ratio: str = "anyres_max_2"):
    """SigLIP tower (no [CLS]), last-layer features; a 2 x 2 crop canvas exceeds anyres_max_2 and
    is downsampled; Qwen2 text model."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    torch.manual_seed(seed)
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=CROP,
        patch_size=7,
        vision_use_head=False,
    )
    llama = tiny_llama_config()
    text = Qwen2Config(
        vocab_size=llama.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_TOKEN,
        video_token_index=VIDEO_TOKEN,
        image_grid_pinpoints=PINPOINTS,
        vision_aspect_ratio=aspect_ratio,
    )
    config._attn_implementation = attn
    return LlavaOnevisionForConditionalGeneration(config).eval()


def image_token_counts(model, sizes: list[tuple[int, int]], base_only: bool = False) -> list[int]:
    """Placeholders per image, from the model's own patch count and packing functions."""
    inner = model.model
    modeling = sys.modules[type(inner).__module__]
    config = model.config
    side = config.vision_config.image_size // config.vision_config.patch_size
    counts = []
    for size in sizes:
        patches = (
            1
            if base_only
            else modeling.image_size_to_num_patches(
                list(size), config.image_grid_pinpoints, config.vision_config.image_size
            )
        )
        dummy = [torch.zeros(patches, side * side, 1)]
        kwargs = (
            {"vision_aspect_ratio": config.vision_aspect_ratio}
            if hasattr(config, "vision_aspect_ratio")
            else {"vision_feature_select_strategy": config.vision_feature_select_strategy}
        )
        packed, _ = inner.pack_image_features(
            dummy, torch.tensor([size]), image_newline=torch.ones(1), **kwargs
        )
        counts.append(packed[0].shape[0])
    return counts


def _left_pad(rows: list[list[int]]) -> dict:
    width = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, width - len(r) :] = torch.tensor(r)
        attention_mask[b, width - len(r) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _text(generator, n: int) -> list[int]:
    return torch.randint(3, VIDEO_TOKEN, (n,), generator=generator).tolist()


def image_inputs(model, prompts: list[list[tuple[int, int]]], seed: int = 0) -> dict:
    """A left-padded batch; prompt b shows the images of sizes prompts[b] ((height, width) each),
    separated by text. OneVision prompts with several images get `batch_num_images`."""
    generator = torch.Generator().manual_seed(seed)
    onevision = hasattr(model.config, "vision_aspect_ratio")
    rows, sizes, patches = [], [], []
    modeling = sys.modules[type(model.model).__module__]
    for b, prompt in enumerate(prompts):
        base_only = onevision and len(prompt) > 1
        counts = image_token_counts(model, prompt, base_only)
        ids = [1] + _text(generator, 2 + b)
        for count in counts:
            ids += [IMAGE_TOKEN] * count + _text(generator, 2)
        rows.append(ids + _text(generator, 3))
        for size in prompt:
            sizes.append(size)
            patches.append(
                1
                if base_only
                else modeling.image_size_to_num_patches(
                    list(size), model.config.image_grid_pinpoints, model.config.vision_config.image_size
                )
            )
    inputs = _left_pad(rows)
    inputs["pixel_values"] = torch.randn(len(sizes), max(patches), 3, CROP, CROP, generator=generator)
    inputs["image_sizes"] = torch.tensor(sizes)
    if onevision:
        inputs["batch_num_images"] = torch.tensor([len(p) for p in prompts])
    return inputs


def video_inputs(model, frames: int, batch: int, seed: int = 0) -> dict:
    """One video of `frames` frames per prompt; prompts of different text lengths, left-padded."""
    generator = torch.Generator().manual_seed(seed)
    side = -(-model.config.vision_config.image_size // model.config.vision_config.patch_size // 2)
    per_video = frames * side * side + 1
    rows = [
        [1] + _text(generator, 2 + 3 * b) + [VIDEO_TOKEN] * per_video + _text(generator, 3)
        for b in range(batch)
    ]
    inputs = _left_pad(rows)
    inputs["pixel_values_videos"] = torch.randn(batch, frames, 3, CROP, CROP, generator=generator)
    return inputs
