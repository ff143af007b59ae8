"""Text-only causal LMs with a Llama-style decoder stack: Llama, Mistral, Qwen2, Qwen3 (`*ForCausalLM`).

"llm" stage (LazySkip, or any LayerPruner): one prunable group per sample, the prompt's real tokens
except its final one, with origins = prompt positions. "prefill" stage (GemFilter): select-then-
prefill on the text model.
"""

from __future__ import annotations

import torch

from tokenprune.adapters.transformers import compat
from tokenprune.adapters.transformers.base import Adapter
from tokenprune.adapters.transformers.decoder import DecoderStack, LayerPruningEngine, TokenGroups
from tokenprune.adapters.transformers.prefill_select import prefill_engine


class CausalLMAdapter(Adapter):
    supported_stages = ("prefill", "llm")

    def __init__(self, model, pruner, stats) -> None:
        super().__init__(model, pruner, stats)
        self.text_model = model.model
        stack = DecoderStack(self.text_model)
        # pruned sequences get explicit causal masks without a sliding window
        self.sliding_window = getattr(model.config, "sliding_window", None)
        self.select = prefill_engine(stack, pruner, stats)
        inner = pruner.at("llm")
        self.engine = LayerPruningEngine(stack, inner, stats, self._groups_for) if inner is not None else None

    def install(self) -> None:
        if self.sliding_window is not None:
            self.hook_before(self.text_model, self._check_window)
        if self.select is not None:
            self.select.install(self)
        if self.engine is not None:
            self.engine.install(self)

    def _check_window(self, module, args, kwargs):
        tokens = kwargs.get("inputs_embeds")
        if tokens is None:
            tokens = kwargs.get("input_ids", args[0] if args else None)
        # a pruned cache is shorter than the sequence; the 2-D mask and kept positions still span it
        spans = [tokens.shape[1] + compat.cached_length(kwargs)]
        mask, position_ids = kwargs.get("attention_mask"), kwargs.get("position_ids")
        if mask is not None and mask.dim() == 2:
            spans.append(mask.shape[-1])
        if position_ids is not None:
            spans.append(int(position_ids.max()) + 1)
        if max(spans) > self.sliding_window:
            raise ValueError(
                f"tokenprune supports sliding-window attention only while the sequence fits in the window "
                f"({self.sliding_window} tokens); this one has {max(spans)}"
            )

    def _groups_for(self, valid: torch.Tensor) -> TokenGroups:
        prompts = [valid[b].nonzero().squeeze(1)[:-1] for b in range(valid.shape[0])]
        return TokenGroups.whole([[p] for p in prompts], [[None] for _ in prompts])
