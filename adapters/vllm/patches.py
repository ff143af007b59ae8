"""The two places where vLLM 0.32 must be widened so a model can prune image tokens with M-RoPE.

vLLM's only pruning path (EVS) is keyed to `--video-pruning-rate`: the model runner recomputes M-RoPE
positions from the extra position columns of the encoder output only when
`MultiModalConfig.is_multimodal_pruning_enabled()` is true, and the CPU runner never sets its flag
at all. Both patches are no-ops unless a tokenprune Qwen model marked the config, and are applied
only to the vLLM versions they were written against; other versions make the Qwen models fail at
startup instead of producing wrong positions. LLaVA (1-D RoPE) needs neither.
"""

from __future__ import annotations

import functools

import vllm

TESTED_VERSIONS = ("0.32.",)
MARK = "_tokenprune_prunes_images"

_active = False


def patches_active() -> bool:
    return _active


def mark_pruning(multimodal_config) -> None:
    """Flag a model's multimodal config as pruning images (read by the patched check below)."""
    object.__setattr__(multimodal_config, MARK, True)


def apply_patches() -> None:
    global _active
    if _active or not vllm.__version__.startswith(TESTED_VERSIONS):
        return
    from vllm.config.multimodal import MultiModalConfig
    from vllm.model_executor.models.interfaces import supports_multimodal_pruning

    # 1. Read by the model's own __init__, GPUModelRunner.load_model (V1) and maybe_create_mm_pruner
    #    (model runner V2): with it, they strip and apply our position columns like EVS ones.
    original_enabled = MultiModalConfig.is_multimodal_pruning_enabled

    @functools.wraps(original_enabled)
    def is_multimodal_pruning_enabled(self):
        return getattr(self, MARK, False) or original_enabled(self)

    MultiModalConfig.is_multimodal_pruning_enabled = is_multimodal_pruning_enabled

    # 2. CPUModelRunner.load_model replaces GPUModelRunner.load_model without setting
    #    `is_multimodal_pruning_enabled`; set it the way the GPU runner does.
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    except ImportError:  # a build without the CPU runner
        CPUModelRunner = None
    if CPUModelRunner is not None:
        original_load = CPUModelRunner.load_model

        @functools.wraps(original_load)
        def load_model(self, *args, **kwargs):
            original_load(self, *args, **kwargs)
            mm_config = self.model_config.multimodal_config
            self.is_multimodal_pruning_enabled = (
                supports_multimodal_pruning(self.get_model())
                and mm_config is not None
                and mm_config.is_multimodal_pruning_enabled()
            )

        CPUModelRunner.load_model = load_model
    _active = True
