"""Qwen2.5-VL and Qwen2-VL with VisionZip and FoPru in vLLM: the attention significance recomputed
inside vLLM's vision tower (the last full-attention block; Qwen2.5-VL's window order undone) equals
the transformers adapter's on the same weights and images, and selects the same merged tokens, for
a square and a tall image in one prompt. One engine per family."""

from __future__ import annotations

import pytest
import torch
from engines import QWEN2_5_VL, QWEN2_VL, greedy, image, make_llm, overrides, record_selections, shutdown

import tokenprune as tp
from tokenprune.pruners import VisualTokens

BUDGET = 4
MARKUP = "<|vision_start|><|image_pad|><|vision_end|>"
PROMPT = f"user: w1 {MARKUP} w2 {MARKUP} w3 assistant:"
# 112x112: 4x4 merged tokens in 4 attention windows; 56 wide x 112 tall: 4x2 merged tokens
IMAGES = [image(11, (112, 112)), image(12, (56, 112))]


# architecture, checkpoint fixture, transformers class
FAMILIES = {
    "qwen2_5_vl": (QWEN2_5_VL, "qwen_dir", "Qwen2_5_VLForConditionalGeneration"),
    "qwen2_vl": (QWEN2_VL, "qwen2_vl_dir", "Qwen2VLForConditionalGeneration"),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    architecture, directory, model_class = FAMILIES[request.param]
    return architecture, request.getfixturevalue(directory), model_class


@pytest.fixture(scope="module")
def served(family):
    architecture, model_dir, _ = family
    llm = make_llm(model_dir, overrides(architecture, "visionzip", BUDGET))
    try:
        calls = record_selections(llm)
        [output] = llm.generate([{"prompt": PROMPT, "multi_modal_data": {"image": IMAGES}}], greedy())
        text = len(llm.get_tokenizer().encode(PROMPT, add_special_tokens=False))
    finally:
        shutdown(llm)
    return output, calls, text


class RecordingFoPru(tp.FoPru):
    """FoPru that also keeps the attention significance the transformers adapter gave it."""

    def select(self, tokens):
        self.__dict__.setdefault("seen", []).append(tokens.attention.detach().clone())
        return super().select(tokens)


def transformers_kept(family, pruner) -> list[tuple[int, ...]]:
    import transformers

    _, model_dir, model_class = family
    model = getattr(transformers, model_class).from_pretrained(model_dir, attn_implementation="sdpa").eval()
    inputs = transformers.AutoProcessor.from_pretrained(model_dir)(
        text=[PROMPT], images=IMAGES, return_tensors="pt"
    )
    with tp.apply(model, pruner) as run, torch.no_grad():
        model(**inputs)
    return [record.kept_indices for record in run.stats.for_stage("pre_llm")]


def test_attention_equals_the_transformers_adapters(served, family):
    """Same significance per merged token, in original order (the tower's window order undone)."""
    _, calls, _ = served
    reference = RecordingFoPru(BUDGET)
    transformers_kept(family, reference)
    assert len(reference.seen) == len(calls) == 2
    for call, expected in zip(calls, reference.seen):
        torch.testing.assert_close(call["attention"], expected.float(), rtol=1e-4, atol=1e-6)


def test_prompt_holds_text_plus_kept_tokens(served):
    output, calls, text = served
    assert [call["grid"] for call in calls] == [(4, 4), (4, 2)]
    assert len(output.prompt_token_ids) == text - 2 + 2 * BUDGET  # each markup holds one pad token
    assert len(output.outputs[0].token_ids) == 6


def test_visionzip_keeps_what_the_transformers_adapter_keeps(served, family):
    _, calls, _ = served
    assert [call["kept"] for call in calls] == transformers_kept(family, tp.VisionZip(BUDGET, contextual=0))


@pytest.mark.parametrize("strategy", ["rank", "row"])
def test_fopru_on_vllm_attention_keeps_what_the_transformers_adapter_keeps(served, family, strategy):
    _, calls, _ = served
    pruner = tp.FoPru(BUDGET, strategy=strategy)
    ours = [
        tuple(
            pruner.select(
                VisualTokens(
                    features=torch.zeros(len(call["attention"]), 1),
                    grid=call["grid"],
                    attention=call["attention"],
                )
            ).indices.tolist()
        )
        for call in calls
    ]
    assert ours == transformers_kept(family, pruner)


def test_attention_is_a_distribution_over_each_image(served):
    """Mean attention received, pooled over 2x2 groups: per image it sums to 1 / merge unit (4)."""
    _, calls, _ = served
    for call in calls:
        assert float(call["attention"].sum()) == pytest.approx(0.25, abs=1e-5)
