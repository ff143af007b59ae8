"""Hugging Face transformers adapters, one file per model family.

A family is added by writing its adapter module and naming its model classes here; the core
never imports transformers itself.
"""

from __future__ import annotations

import importlib

# model class name -> "module:AdapterClass", looked up along the model's class hierarchy
ADAPTERS: dict[str, str] = {
    "LlavaForConditionalGeneration": "tokenprune.adapters.transformers.llava:LlavaAdapter",
    "Qwen2VLForConditionalGeneration": "tokenprune.adapters.transformers.qwen_vl:QwenVLAdapter",
    "Qwen2_5_VLForConditionalGeneration": "tokenprune.adapters.transformers.qwen_vl:Qwen2_5_VLAdapter",
    "Qwen3VLForConditionalGeneration": "tokenprune.adapters.transformers.qwen3_vl:Qwen3VLAdapter",
    "LlavaNextForConditionalGeneration": "tokenprune.adapters.transformers.llava_next:LlavaNextAdapter",
    "LlavaOnevisionForConditionalGeneration": "tokenprune.adapters.transformers.llava_onevision:LlavaOnevisionAdapter",
    "LlamaForCausalLM": "tokenprune.adapters.transformers.causal_lm:CausalLMAdapter",
    "MistralForCausalLM": "tokenprune.adapters.transformers.causal_lm:CausalLMAdapter",
    "Qwen2ForCausalLM": "tokenprune.adapters.transformers.causal_lm:CausalLMAdapter",
    "Qwen3ForCausalLM": "tokenprune.adapters.transformers.causal_lm:CausalLMAdapter",
}


def find_adapter(model: object) -> type:
    for cls in type(model).__mro__:
        target = ADAPTERS.get(cls.__name__)
        if target and cls.__module__.startswith("transformers."):
            module_name, class_name = target.split(":")
            return getattr(importlib.import_module(module_name), class_name)
    raise TypeError(
        f"tokenprune has no adapter for {type(model).__name__}; supported model classes: {', '.join(sorted(ADAPTERS))}"
    )
