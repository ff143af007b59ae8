"""LLaVA: with a budget that covers every image token, the pruned architecture gives the same
prompts, tokens and log-probabilities as vLLM's in-tree one (same weights, greedy)."""

from __future__ import annotations

from engines import LLAVA, assert_full_budget_matches_in_tree, image, overrides


def test_full_budget_matches_the_in_tree_model(llava_dir):
    requests = [
        {"prompt": "user: w1 w2 w3 <image> w4 w5 assistant:", "multi_modal_data": {"image": image(5)}},
        {
            "prompt": "user: w1 <image> w2 <image> w3 assistant:",
            "multi_modal_data": {"image": [image(6), image(7)]},
        },
    ]
    assert_full_budget_matches_in_tree(llava_dir, overrides(LLAVA, "divprune", 64), requests)
