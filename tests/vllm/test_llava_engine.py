"""LLaVA through a real vLLM engine (CPU): prompt lengths, generation, and equivalence to the
in-tree architecture when the budget covers every token."""

from __future__ import annotations

import pytest
from engines import LLAVA, image, make_llm, overrides, shutdown

NATURAL = 16  # 56x56 image, 14-pixel patches
BUDGET = 4
TEXT = "user: w1 w2 w3 <image> w4 w5 assistant:"
TWO_IMAGES = "user: w1 <image> w2 <image> w3 assistant:"


def greedy(max_tokens: int = 6):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=3, ignore_eos=True)


def text_tokens(llm, prompt: str) -> int:
    return len(llm.get_tokenizer().encode(prompt.replace("<image>", ""), add_special_tokens=False))


@pytest.fixture(scope="module")
def pruned(llava_dir):
    llm = make_llm(llava_dir, overrides(LLAVA, "divprune", BUDGET))
    yield llm
    shutdown(llm)


def test_prompt_holds_text_plus_kept_tokens_and_generates(pruned):
    requests = [
        {"prompt": TEXT, "multi_modal_data": {"image": image(0)}},
        {"prompt": TWO_IMAGES, "multi_modal_data": {"image": [image(1), image(2)]}},
    ]
    outputs = pruned.generate(requests, greedy())
    assert len(outputs[0].prompt_token_ids) == text_tokens(pruned, TEXT) + BUDGET
    assert len(outputs[1].prompt_token_ids) == text_tokens(pruned, TWO_IMAGES) + 2 * BUDGET
    for output in outputs:
        assert len(output.outputs[0].token_ids) == 6


def test_selection_depends_on_the_image(pruned):
    """Different images, same text: the kept embeddings differ, so (with random weights) do the
    first-token distributions; a model that ignored the image would give identical ones."""
    outputs = pruned.generate(
        [{"prompt": TEXT, "multi_modal_data": {"image": image(seed)}} for seed in (3, 4)], greedy(1)
    )
    first = [o.outputs[0].logprobs[0] for o in outputs]
    assert {k: v.logprob for k, v in first[0].items()} != {k: v.logprob for k, v in first[1].items()}


def test_full_budget_matches_the_in_tree_model(pruned, llava_dir):
    requests = [
        {"prompt": TEXT, "multi_modal_data": {"image": image(5)}},
        {"prompt": TWO_IMAGES, "multi_modal_data": {"image": [image(6), image(7)]}},
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
        assert full.outputs[0].token_ids == reference.outputs[0].token_ids
        for got, want in zip(full.outputs[0].logprobs, reference.outputs[0].logprobs):
            assert got.keys() == want.keys()
            for token in got:
                assert got[token].logprob == pytest.approx(want[token].logprob, abs=1e-4)
