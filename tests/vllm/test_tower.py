"""In-tower pruning in vLLM: ZeroTPrune shortens the hidden states between vLLM's CLIP encoder layers
of the trained reference model; prompts, kept-token count and answers equal the transformers adapter's
(same weights, greedy). ToMe is refused: vLLM's encoder attention takes no additive bias."""

from __future__ import annotations

import pytest
import torch
from engines import LLAVA, answer, make_llm, overrides, picture, prompt, shutdown

import tokenprune as tp
from tokenprune import zoo
from tokenprune.adapters.vllm.llava import llava_prune_config
from tokenprune.zoo import scenes
from tokenprune.zoo.export import export_vllm

BUDGET = 16  # of 64 image tokens
SAMPLES = [scenes.sample(11, i) for i in range(5)]


def test_zerotprune_answers_equal_the_transformers_adapter(tmp_path_factory):
    from vllm import SamplingParams

    model_dir = export_vllm("toy-vlm", tmp_path_factory.mktemp("toy_vlm"))
    llm = make_llm(model_dir, overrides(LLAVA, "zerotprune", BUDGET), limit_mm_per_prompt={"image": 1})
    try:
        outputs = llm.generate(
            [{"prompt": prompt(s), "multi_modal_data": {"image": picture(s)}} for s in SAMPLES],
            SamplingParams(max_tokens=3, temperature=0.0),
        )
    finally:
        shutdown(llm)
    model, processor = zoo.load_vlm()
    for sample, output in zip(SAMPLES, outputs):
        inputs = processor(text=[prompt(sample)], images=[picture(sample)], return_tensors="pt")
        # vLLM's prompt really is shorter: kept tokens and the text after them get contiguous positions
        with tp.apply(model, tp.ZeroTPrune(BUDGET, positions="reindex")), torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        assert len(output.prompt_token_ids) == inputs.input_ids.shape[1] - 64 + BUDGET
        eos = processor.tokenizer.eos_token_id
        assert answer(output.outputs[0].token_ids, eos) == answer(
            generated[0, inputs.input_ids.shape[1] :].tolist(), eos
        )


def test_merging_in_the_tower_is_refused():
    model, _ = zoo.load_vlm()
    config = model.config
    config.tokenprune = {"method": "tome", "budget": BUDGET}
    with pytest.raises(
        ValueError, match="'tome' exists but is not supported for LLaVA.*supported: .*zerotprune"
    ):
        llava_prune_config(config)
