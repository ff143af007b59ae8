"""Tiny random Qwen2-VL, Qwen2.5-VL and Qwen3-VL models built from configs, and hand-built inputs."""

from __future__ import annotations

import torch

VOCAB = 160
IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 151, 152, 153, 154
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
PATCH, TEMPORAL_PATCH, MERGE = 4, 2, 2


def _text(head_dim: int = 16, **overrides) -> dict:
    values = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    values.update(overrides)
    return values


def tiny_qwen(family: str, seed: int = 0, attn: str = "sdpa", **text_overrides):
    """A random model of `family` with a 3-block vision tower (4x4 patches, 2x2 merging) and a 4-layer
    language model. Qwen2.5-VL: window attention in blocks 0 and 2 (window of 2x2 merged tokens),
    full attention in block 1. Qwen3-VL: DeepStack features from vision blocks 0 and 1."""
    import transformers as tf

    torch.manual_seed(seed)
    tokens = dict(
        image_token_id=IMAGE_TOKEN,
        video_token_id=VIDEO_TOKEN,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
    )
    common = dict(
        depth=3,
        num_heads=4,
        in_channels=3,
        patch_size=PATCH,
        spatial_merge_size=MERGE,
        temporal_patch_size=TEMPORAL_PATCH,
    )
    if family == "qwen2_vl":
        vision = dict(common, embed_dim=32, hidden_size=64, mlp_ratio=2)
        config = tf.Qwen2VLConfig(vision_config=vision, text_config=_text(**text_overrides), **tokens)
        model_cls = tf.Qwen2VLForConditionalGeneration
    elif family == "qwen2_5_vl":
        vision = dict(
            common,
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=64,
            window_size=2 * MERGE * PATCH,
            fullatt_block_indexes=[1],
        )
        config = tf.Qwen2_5_VLConfig(vision_config=vision, text_config=_text(**text_overrides), **tokens)
        model_cls = tf.Qwen2_5_VLForConditionalGeneration
    elif family == "qwen3_vl":
        vision = dict(
            common,
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=64,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0, 1],
        )
        text = _text(**text_overrides)
        text["rope_parameters"] = dict(text["rope_parameters"], mrope_interleaved=True)
        config = tf.Qwen3VLConfig(vision_config=vision, text_config=text, **tokens)
        model_cls = tf.Qwen3VLForConditionalGeneration
    else:
        raise ValueError(f"unknown family {family!r}")
    config._attn_implementation = attn
    config.text_config._attn_implementation = attn
    config.vision_config._attn_implementation = attn
    return model_cls(config).eval()


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
    width = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, width - len(r) :] = torch.tensor(r)
        attention_mask[b, width - len(r) :] = 1
    mm_token_type_ids = torch.zeros_like(input_ids, dtype=torch.int32)
    mm_token_type_ids[input_ids == IMAGE_TOKEN] = 1
    mm_token_type_ids[input_ids == VIDEO_TOKEN] = 2
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mm_token_type_ids": mm_token_type_ids,
    }
    if images:
        inputs["pixel_values"] = torch.cat(images)
        inputs["image_grid_thw"] = torch.tensor(image_grids)
    if videos:
        inputs["pixel_values_videos"] = torch.cat(videos)
        inputs["video_grid_thw"] = torch.tensor(video_grids)
    return inputs
