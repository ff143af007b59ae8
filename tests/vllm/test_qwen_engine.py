"""Qwen2.5-VL through a real vLLM engine (CPU): prompt lengths, prefix-cache hits against cold
runs, and equivalence to the in-tree architecture when the budget covers every token."""

from __future__ import annotations

import pytest
from engines import QWEN2_5_VL, image, make_llm, overrides, shutdown

BUDGET = 4
MARKUP = "<|vision_start|><|image_pad|><|vision_end|>"
# The image lies inside the first 32-token KV block, so a repeated request serves it from the cache.
LONG = "user: w1 " + MARKUP + " " + " ".join(f"w{i % 40}" for i in range(40)) + " assistant:"
SHORT = "user: w1 " + MARKUP + " w2 w3 assistant:"


def greedy(max_tokens: int = 6):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=3, ignore_eos=True)


def same_outputs(a, b) -> None:
    assert a.outputs[0].token_ids == b.outputs[0].token_ids
    for got, want in zip(a.outputs[0].logprobs, b.outputs[0].logprobs):
        assert got.keys() == want.keys()
        for token in got:
            assert got[token].logprob == pytest.approx(want[token].logprob, abs=1e-4)


@pytest.fixture(scope="module")
def pruned(qwen_dir):
    llm = make_llm(
        qwen_dir, overrides(QWEN2_5_VL, "divprune", BUDGET), enable_prefix_caching=True, block_size=32
    )
    yield llm
    shutdown(llm)


def test_prompt_holds_text_plus_kept_tokens_and_generates(pruned):
    text = len(pruned.get_tokenizer().encode(SHORT, add_special_tokens=False))  # one pad token in the text
    [output] = pruned.generate(
        [{"prompt": SHORT, "multi_modal_data": {"image": image(0, (112, 112))}}], greedy()
    )
    assert len(output.prompt_token_ids) == text - 1 + BUDGET
    assert len(output.outputs[0].token_ids) == 6


def test_prefix_cache_hit_matches_cold_run(pruned):
    request = {"prompt": LONG, "multi_modal_data": {"image": image(1, (112, 112))}}
    [cold] = pruned.generate([request], greedy())
    [warm] = pruned.generate([request], greedy())
    assert not cold.num_cached_tokens
    assert warm.num_cached_tokens >= 32
    same_outputs(warm, cold)


def test_full_budget_matches_the_in_tree_model(qwen_dir):
    requests = [
        {"prompt": SHORT, "multi_modal_data": {"image": image(2, (56, 112))}},  # taller than wide
        {"prompt": SHORT, "multi_modal_data": {"image": image(3, (112, 112))}},
    ]
    results = {}
    for name, hf_overrides in (("full", overrides(QWEN2_5_VL, "uniform", 1.0)), ("in_tree", None)):
        llm = make_llm(qwen_dir, hf_overrides)
        try:
            results[name] = llm.generate(requests, greedy())
        finally:
            shutdown(llm)
    for full, reference in zip(results["full"], results["in_tree"]):
        assert full.prompt_token_ids == reference.prompt_token_ids
        same_outputs(full, reference)
