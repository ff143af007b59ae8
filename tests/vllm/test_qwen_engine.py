"""Qwen2.5-VL through a real vLLM engine (CPU): prompt lengths, and a prefix-cache hit that covers a
pruned image gives the same outputs as the cold run."""

from __future__ import annotations

import pytest
from engines import QWEN2_5_VL, assert_same_outputs, greedy, image, make_llm, overrides, shutdown

BUDGET = 4
MARKUP = "<|vision_start|><|image_pad|><|vision_end|>"
# The image lies inside the first 32-token KV block, so a repeated request serves it from the cache.
LONG = "user: w1 " + MARKUP + " " + " ".join(f"w{i % 40}" for i in range(40)) + " assistant:"
SHORT = "user: w1 " + MARKUP + " w2 w3 assistant:"


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
    assert_same_outputs(warm, cold)
