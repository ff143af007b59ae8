"""LLaVA through a real vLLM engine (CPU) with Downsample: merged embeddings in place of the
image's placeholders."""

from __future__ import annotations

from engines import LLAVA, greedy, image, make_llm, overrides, shutdown

TEXT = "user: w1 w2 w3 <image> w4 w5 assistant:"


def test_downsample_fills_the_pooled_placeholders_and_generates(llava_dir):
    """2 x 2 cells of the 4 x 4 patch grid: 4 pooled embeddings per image, and generation runs."""
    llm = make_llm(llava_dir, overrides(LLAVA, "downsample", 0.25))
    try:
        outputs = llm.generate([{"prompt": TEXT, "multi_modal_data": {"image": image(0)}}], greedy())
        text = len(llm.get_tokenizer().encode(TEXT.replace("<image>", ""), add_special_tokens=False))
        assert len(outputs[0].prompt_token_ids) == text + 4
        assert len(outputs[0].outputs[0].token_ids) == 6
    finally:
        shutdown(llm)
