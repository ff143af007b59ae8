"""Tiny random Qwen2-VL, Qwen2.5-VL and Qwen3-VL models built from configs, and hand-built inputs."""

from __future__ import annotations

import torch

import tiny_models
from tiny_models import left_pad
from tokenprune.zoo import builders

VOCAB = 160
IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 151, 152, 153, 154
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
PATCH, TEMPORAL_PATCH, MERGE = 4, 2, 2


# the tiny decoder and tower of the other test models, with Qwen's vocabulary, head size and merger
TEXT = dict(tiny_models.TEXT, vocab=VOCAB, head_dim=16, max_positions=1024, tie_word_embeddings=False)
TOWER = dict(tiny_models.TOWER, out=64, patch_size=PATCH, temporal_patch_size=TEMPORAL_PATCH, merge=MERGE)
TOWER_LAYOUT = {
    "qwen2_vl": {},
    "qwen2_5_vl": dict(window_size=2 * MERGE * PATCH, fullatt_block_indexes=[1]),
    "qwen3_vl": dict(num_position_embeddings=64, deepstack_visual_indexes=[0, 1]),
}


def tiny_qwen(family: str, seed: int = 0, attn: str = "sdpa"):
    """A random model of `family` with a 3-block vision tower (4x4 patches, 2x2 merging) and a 4-layer
    language model. Qwen2.5-VL: window attention in blocks 0 and 2 (window of 2x2 merged tokens),
    full attention in block 1. Qwen3-VL: DeepStack features from vision blocks 0 and 1."""
    return builders.qwen_vl(
        family,
        seed=seed,
        attn=attn,
        vision=dict(TOWER, **TOWER_LAYOUT[family]),
        text=TEXT,
        image_token=IMAGE_TOKEN,
        video_token=VIDEO_TOKEN,
        vision_start=VISION_START,
        vision_end=VISION_END,
    )


def qwen_inputs(
    prompts: list[list],
    family: str = "qwen2_vl",
    seed: int = 0,
    text: tuple[int, int] = (3, 4),
) -> dict:
    """A left-padded batch. Each prompt is a list of visual items: ("image", h, w) or ("video", t, h, w)
    in patches (h, w even; t even, in frames), each wrapped in vision start/end tokens, with `text`
    random tokens before the first item and after the last. Qwen3-VL videos are laid out as its
    processor does: one start/end run per temporal patch, after a timestamp token."""
    generator = torch.Generator().manual_seed(seed)
    patch_dim = 3 * TEMPORAL_PATCH * PATCH * PATCH
    rows, image_grids, video_grids, images, videos = [], [], [], [], []
    for p, items in enumerate(prompts):
        ids = [1] + torch.randint(3, IMAGE_TOKEN, (text[0] + p,), generator=generator).tolist()
        for item in items:
            if item[0] == "image":
                grid, token, kind = (1, item[1], item[2]), IMAGE_TOKEN, 1
                image_grids.append(grid)
                images.append(torch.randn(grid[0] * grid[1] * grid[2], patch_dim, generator=generator))
            else:
                grid, token, kind = (item[1] // TEMPORAL_PATCH, item[2], item[3]), VIDEO_TOKEN, 2
                video_grids.append(grid)
                videos.append(torch.randn(grid[0] * grid[1] * grid[2], patch_dim, generator=generator))
            per_frame = grid[1] * grid[2] // MERGE**2
            if kind == 2 and family == "qwen3_vl":
                for _ in range(grid[0]):
                    ids += [3, VISION_START] + [token] * per_frame + [VISION_END]
            else:
                ids += [VISION_START] + [token] * (grid[0] * per_frame) + [VISION_END]
        ids += torch.randint(3, IMAGE_TOKEN, (text[1],), generator=generator).tolist()
        rows.append(ids)
    inputs = left_pad(rows)
    input_ids = inputs["input_ids"]
    mm_token_type_ids = torch.zeros_like(input_ids, dtype=torch.int32)
    mm_token_type_ids[input_ids == IMAGE_TOKEN] = 1
    mm_token_type_ids[input_ids == VIDEO_TOKEN] = 2
    inputs["mm_token_type_ids"] = mm_token_type_ids
    if images:
        inputs["pixel_values"] = torch.cat(images)
        inputs["image_grid_thw"] = torch.tensor(image_grids)
    if videos:
        inputs["pixel_values_videos"] = torch.cat(videos)
        inputs["video_grid_thw"] = torch.tensor(video_grids)
    return inputs


def unpruned_positions(model, inputs):
    """(3, B, L) M-RoPE ids of the unpruned prompt and (B, 1) rope deltas, from the model itself."""
    return model.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs.get("image_grid_thw"),
        video_grid_thw=inputs.get("video_grid_thw"),
        attention_mask=inputs["attention_mask"],
    )
