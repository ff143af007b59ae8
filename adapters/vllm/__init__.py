"""vLLM plugin: image-token pruning before the language model, as pruned variants of in-tree models.

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

_registered = False


def register() -> None:
    """Register the pruned architectures (lazily, by name) and the runner patches; safe to call again."""
    global _registered
    if _registered:
        return
    from vllm import ModelRegistry

    from tokenprune.adapters.vllm.patches import apply_patches

    for architecture, target in ARCHITECTURES.items():
        ModelRegistry.register_model(architecture, target)
    apply_patches()
    _registered = True
