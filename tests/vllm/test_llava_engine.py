"""LLaVA through a real vLLM engine (CPU): prompt lengths and generation with DivPrune at 4 of 16
image tokens."""

from __future__ import annotations

import pytest
from engines import LLAVA, greedy, image, make_llm, overrides, shutdown

BUDGET = 4
TEXT = "user: w1 w2 w3 <image> w4 w5 assistant:"
TWO_IMAGES = "user: w1 <image> w2 <image> w3 assistant:"


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
