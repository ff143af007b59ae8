"""LLaVA: with a budget that covers every image token, the pruned architecture gives the same
prompts, tokens and log-probabilities as vLLM's in-tree one (same weights, greedy)."""

from __future__ import annotations

from engines import LLAVA, assert_same_outputs, greedy, image, make_llm, overrides, shutdown


def test_full_budget_matches_the_in_tree_model(llava_dir):
    requests = [
        {"prompt": "user: w1 w2 w3 <image> w4 w5 assistant:", "multi_modal_data": {"image": image(5)}},
        {
            "prompt": "user: w1 <image> w2 <image> w3 assistant:",
            "multi_modal_data": {"image": [image(6), image(7)]},
        },
    ]
    results = {}
    for name, hf_overrides in (("full", overrides(LLAVA, "divprune", 64)), ("in_tree", None)):
        llm = make_llm(llava_dir, hf_overrides)
        try:
            results[name] = llm.generate(requests, greedy())
        finally:
            shutdown(llm)
    for full, reference in zip(results["full"], results["in_tree"]):
        assert full.prompt_token_ids == reference.prompt_token_ids
        assert_same_outputs(full, reference)
