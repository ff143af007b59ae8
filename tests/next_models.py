"""Tiny random LLaVA-NeXT and LLaVA-OneVision models from configs (no downloads), and prompts
with the placeholder counts the models expect."""

from __future__ import annotations

import sys

import torch

from tiny_models import IMAGE_TOKEN, LLAVA_FEATURES, TEXT, TOWER, left_pad
from tokenprune.adapters.transformers import compat
from tokenprune.zoo import builders

VIDEO_TOKEN = 126
CROP = 42  # tower resolution: 6 x 6 patches of 7 pixels per crop
PINPOINTS = [[42, 84], [84, 42], [84, 84]]


def tiny_llava_next(seed: int = 0, attn: str = "sdpa"):
    """CLIP tower (with [CLS]), layer -2 features, anyres with up to 2 x 2 crops, Llama text model."""
    return builders.llava_next(
        seed=seed,
        attn=attn,
        vision=dict(TOWER, image_size=CROP, patch_size=7, projection_dim=32),
        text=TEXT,
        image_token=IMAGE_TOKEN,
        pinpoints=PINPOINTS,
        **LLAVA_FEATURES,
    )


def tiny_llava_onevision(seed: int = 0, attn: str = "sdpa", aspect_ratio: str = "anyres_max_2"):
    """SigLIP tower (no [CLS]), last-layer features; a 2 x 2 crop canvas exceeds anyres_max_2 and
    is downsampled; Qwen2 text model."""
    return builders.llava_onevision(
        seed=seed,
        attn=attn,
        vision=dict(TOWER, image_size=CROP, patch_size=7),
        text=TEXT,
        image_token=IMAGE_TOKEN,
        video_token=VIDEO_TOKEN,
        pinpoints=PINPOINTS,
        vision_aspect_ratio=aspect_ratio,
    )


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
    inputs = left_pad(rows)
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
    inputs = left_pad(rows)
    inputs["pixel_values_videos"] = torch.randn(batch, frames, 3, CROP, CROP, generator=generator)
    return inputs


def placeholder_groups(model, inputs):
    """Per sample: (candidate count, newline count) of each image/video, in prompt order, from
    the unpruned model's own encodings."""
    inner = model.model
    ids = inputs["input_ids"]
    newline = inner.image_newline
    found = []
    with torch.no_grad():
        if "pixel_values" in inputs:
            extra = {k: inputs[k] for k in ("batch_num_images",) if k in inputs}
            feats = inner.get_image_features(
                inputs["pixel_values"], inputs["image_sizes"], **extra
            ).pooler_output
            token = model.config.image_token_id
        else:
            feats = list(
                compat.video_features_with_newline(
                    inner, inner.get_video_features(inputs["pixel_values_videos"])
                )
            )
            token = model.config.video_token_id
    where = (ids == token).nonzero()
    for f, chunk in zip(feats, where.split([len(f) for f in feats])):
        lines = int((f == newline).all(-1).sum())
        found.append((int(chunk[0, 0]), len(f) - lines, lines))
    return [[(n, lines) for b, n, lines in found if b == sample] for sample in range(len(ids))]
