"""Placeholder counts decided by the pruned processors, without starting an engine."""

from __future__ import annotations

import pytest
from engines import LLAVA, QWEN2_5_VL, image, overrides


def processor_for(model_dir, hf_overrides):
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    from tokenprune.adapters.vllm import register

    register()
    config = ModelConfig(
        model=str(model_dir),
        dtype="float32",
        hf_overrides=hf_overrides or {},
        limit_mm_per_prompt={"image": 2},
    )
    return MULTIMODAL_REGISTRY.create_processor(config)


def placeholders(processor, prompt: str, images) -> tuple[list[int], list[int]]:
    from vllm.multimodal.processing.context import TimingContext
    from vllm.multimodal.processing.inputs import ProcessorInputs

    ids = processor.info.get_tokenizer().encode(prompt, add_special_tokens=False)
    items = processor.info.parse_mm_data({"image": images})
    result = processor.apply(ProcessorInputs(prompt=ids, mm_data_items=items), TimingContext(enabled=False))
    return result["prompt_token_ids"], [r.length for r in result["mm_placeholders"]["image"]]


@pytest.mark.parametrize(("budget", "expected"), [(4, 4), (0.5, 8), (16, 16), (100, 16)])
def test_llava_images_get_min_budget_natural_placeholders(llava_dir, budget, expected):
    processor = processor_for(llava_dir, overrides(LLAVA, "divprune", budget))
    prompt = "user: w1 w2 <image> w3 <image> assistant:"
    ids, lengths = placeholders(processor, prompt, [image(0), image(1, (80, 40))])
    assert lengths == [expected, expected]
    image_id = processor.info.get_hf_config().image_token_index
    assert ids.count(image_id) == 2 * expected
    assert len(ids) == 5 + 2 * expected  # user: w1 w2 w3 assistant:
    assert processor.info.get_max_image_tokens() == expected


def test_llava_downsample_gets_its_pooled_count(llava_dir):
    processor = processor_for(llava_dir, overrides(LLAVA, "downsample", 0.25))
    _, lengths = placeholders(
        processor, "user: <image> w1 <image> assistant:", [image(0), image(1, (80, 40))]
    )
    assert lengths == [4, 4]  # 4 x 4 patches in 2 x 2 cells


def test_llava_in_tree_processor_is_untouched(llava_dir):
    processor = processor_for(llava_dir, None)
    _, lengths = placeholders(processor, "user: <image> assistant:", [image(0)])
    assert lengths == [16]


@pytest.mark.parametrize("method", ["divprune", "visionzip", "fopru"])
@pytest.mark.parametrize(
    ("budget", "size", "expected"), [(4, (112, 112), 4), (0.25, (112, 56), 2), (64, (112, 112), 16)]
)
def test_qwen_pad_runs_shrink_and_keep_their_markup(qwen_dir, method, budget, size, expected):
    processor = processor_for(qwen_dir, overrides(QWEN2_5_VL, method, budget))
    prompt = "user: w1 <|vision_start|><|image_pad|><|vision_end|> w2 assistant:"
    ids, lengths = placeholders(processor, prompt, [image(0, size)])
    assert lengths == [expected]
    config = processor.info.get_hf_config()
    start = ids.index(config.vision_start_token_id)
    assert ids[start + 1 : start + 2 + expected] == [config.image_token_id] * expected + [
        config.vision_end_token_id
    ]


def test_qwen_in_llm_methods_fail_at_startup(qwen_dir):
    processor = processor_for(qwen_dir, overrides(QWEN2_5_VL, "fastv", 4))
    with pytest.raises(ValueError, match="paged KV cache"):
        placeholders(processor, "<|vision_start|><|image_pad|><|vision_end|>", [image(0, (112, 112))])
