"""The trained reference model (tokenprune/zoo/weights/toy-vlm, real weights) in vLLM with the
plugin and VisionZip: answers, kept tokens and the [CLS] attention row recomputed inside vLLM's CLIP
tower agree with the transformers side (the transformers adapter, and eager attention)."""

from __future__ import annotations

import pytest
import torch
from engines import LLAVA, answer, make_llm, overrides, picture, prompt, record_selections, shutdown

import tokenprune as tp
from tokenprune import zoo
from tokenprune.zoo import scenes
from tokenprune.zoo.export import export_vllm

BUDGET = 16  # of 64 image tokens (96 px images, 12 px patches)
SAMPLES = [scenes.sample(7, i) for i in range(6)]  # one of each question type and more


@pytest.fixture(scope="module")
def reference():
    model, processor = zoo.load_vlm()
    return model, processor


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from vllm import SamplingParams

    model_dir = export_vllm("toy-vlm", tmp_path_factory.mktemp("toy_vlm"))
    llm = make_llm(model_dir, overrides(LLAVA, "visionzip", BUDGET), limit_mm_per_prompt={"image": 1})
    try:
        calls = record_selections(llm)
        outputs = llm.generate(
            [{"prompt": prompt(s), "multi_modal_data": {"image": picture(s)}} for s in SAMPLES],
            SamplingParams(max_tokens=3, temperature=0.0),
        )
    finally:
        shutdown(llm)
    return outputs, calls


def test_answers_and_kept_tokens_equal_the_transformers_adapters(served, reference):
    outputs, calls = served
    model, processor = reference
    eos = processor.tokenizer.eos_token_id
    for sample, output, call in zip(SAMPLES, outputs, calls):
        inputs = processor(text=[prompt(sample)], images=[picture(sample)], return_tensors="pt")
        # vLLM's prompt really is shorter: kept tokens and the text after them get contiguous positions
        pruner = tp.VisionZip(BUDGET, contextual=0, positions="reindex")
        with tp.apply(model, pruner) as run, torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        vision = model.config.vision_config
        natural = (vision.image_size // vision.patch_size) ** 2
        assert len(output.prompt_token_ids) == inputs.input_ids.shape[1] - natural + BUDGET
        assert call["kept"] == run.stats[0].kept_indices
        assert answer(output.outputs[0].token_ids, eos) == answer(
            generated[0, inputs.input_ids.shape[1] :].tolist(), eos
        )


def test_cls_attention_row_equals_eager_attention(served, reference):
    """vLLM never forms attention probabilities; the row recomputed from its q/k projection equals
    the [CLS] row of the feature layer's eager attention (transformers, same weights), head-summed."""
    _, calls = served
    model, processor = reference
    tower = model.model.vision_tower
    tower.config._attn_implementation = "eager"
    layer = model.config.vision_feature_layer
    for sample, call in zip(SAMPLES, calls):
        pixels = processor.image_processor(images=[picture(sample)], return_tensors="pt").pixel_values
        with torch.no_grad():
            attentions = tower(pixels, output_attentions=True).attentions
        expected = attentions[layer][0, :, 0, 1:].sum(dim=0)
        torch.testing.assert_close(call["attention"], expected, rtol=1e-4, atol=1e-6)
