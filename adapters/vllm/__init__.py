"""vLLM plugin: image-token pruning before the language model, as pruned variants of in-tree models.

tokenprune serve llava-hf/llava-1.5-7b-hf --method divprune --budget 64   # vLLM's OpenAI server

or, with GPU vLLM, the same through `vllm serve`:

vllm serve llava-hf/llava-1.5-7b-hf --hf-overrides \
  '{"architectures": ["TokenPruneLlavaForConditionalGeneration"], "tokenprune": {"method": "divprune", "budget": 64}}'

vLLM loads `register()` through the `vllm.general_plugins` entry point in every process it starts.
"""

from __future__ import annotations

ARCHITECTURES = {
    "TokenPruneLlavaForConditionalGeneration": "tokenprune.adapters.vllm.llava:TokenPruneLlavaForConditionalGeneration",
    "TokenPruneQwen2VLForConditionalGeneration": "tokenprune.adapters.vllm.qwen:TokenPruneQwen2VLForConditionalGeneration",
    "TokenPruneQwen2_5_VLForConditionalGeneration": "tokenprune.adapters.vllm.qwen:TokenPruneQwen2_5_VLForConditionalGeneration",
}

# The pruned architecture for each checkpoint `model_type` (what `tokenprune serve` picks).
BY_MODEL_TYPE = {
    "llava": "TokenPruneLlavaForConditionalGeneration",
    "qwen2_vl": "TokenPruneQwen2VLForConditionalGeneration",
    "qwen2_5_vl": "TokenPruneQwen2_5_VLForConditionalGeneration",
}

_registered = False


def register() -> None:
    """Register the pruned architectures (lazily, by name) and the runner patches; safe to call again."""
    global _registered
    if _registered:
        return
    import importlib

    from vllm import ModelRegistry

    from tokenprune.adapters.vllm import torchvision_ops
    from tokenprune.adapters.vllm.patches import apply_patches

    for architecture, target in ARCHITECTURES.items():
        if torchvision_ops.ops_defined():
            # vLLM inspects a model registered by name in a fresh interpreter, which cannot import
            # this torchvision; a registered class is inspected here. The in-tree model the pruned
            # one extends is registered as its own class too, so it keeps loading unpruned.
            module, name = target.split(":")
            target = getattr(importlib.import_module(module), name)
            in_tree = target.__bases__[-1]
            ModelRegistry.register_model(in_tree.__name__, in_tree)
        ModelRegistry.register_model(architecture, target)
    apply_patches()
    _registered = True
