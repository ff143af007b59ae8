"""Qwen2.5-VL: with a budget that covers every image token, the pruned architecture (position
columns and runner recomputation included) gives the same prompts, tokens and log-probabilities
as vLLM's in-tree one (same weights, greedy), also for an image taller than wide. FoPru runs the
attention capture in the vision tower on the way."""

from __future__ import annotations

from engines import QWEN2_5_VL, assert_full_budget_matches_in_tree, image, overrides

MARKUP = "<|vision_start|><|image_pad|><|vision_end|>"
SHORT = f"user: w1 {MARKUP} w2 w3 assistant:"
# more text before the images than image tokens: the runner-side position recomputation must still
# find the second image (vLLM's EVS version places it over the first)
TWO_IMAGES = "user: " + " ".join(f"w{i}" for i in range(20)) + f" {MARKUP} w1 {MARKUP} w2 assistant:"


def test_full_budget_matches_the_in_tree_model(qwen_dir):
    requests = [
        {"prompt": SHORT, "multi_modal_data": {"image": image(2, (56, 112))}},  # taller than wide
        {"prompt": SHORT, "multi_modal_data": {"image": image(3, (112, 112))}},
        {"prompt": TWO_IMAGES, "multi_modal_data": {"image": [image(4, (112, 112)), image(5, (56, 112))]}},
    ]
    assert_full_budget_matches_in_tree(qwen_dir, overrides(QWEN2_5_VL, "fopru", 1.0), requests)
