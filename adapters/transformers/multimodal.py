"""What the vision-language adapters share: a forward pre-hook on the multimodal model selects the
visual tokens and hands its language model the packed prompt as `inputs_embeds`; decoding steps
after that prefill get its masks and positions, and in-LLM pruners run through the
LayerPruningEngine on the language model."""

from __future__ import annotations

import torch

from tokenprune.adapters.transformers.base import Adapter, PrefillTracker
from tokenprune.adapters.transformers.decoder import DecoderStack, LayerPruningEngine, TokenGroups
from tokenprune.adapters.transformers.sequence import Packed
from tokenprune.pruners.base import VISION_NEEDS


class MultimodalAdapter(Adapter):
    def __init__(self, model, pruner, stats) -> None:
        super().__init__(model, pruner, stats)
        self.vlm = model.model
        self.text_model = self.vlm.language_model
        self.pre = pruner.at("pre_llm")
        self.reindex = pruner.positions == "reindex"
        inner = pruner.at("llm")
        self.engine = (
            LayerPruningEngine(DecoderStack(self.text_model), inner, stats, self._groups_for)
            if inner is not None
            else None
        )
        # what the in-LLM engine may prune at the current prefill, set by `_before_prefill`
        self._groups: TokenGroups | None = None
        self.prefill_tracker = PrefillTracker()

    def install(self) -> None:
        self.hook_before(self.vlm, self._before_forward)
        self.hook_after(self.vlm, self._after_forward)
        if self.pre is not None and self.pre.needs & VISION_NEEDS:
            self._install_vision_capture()
        if self.engine is not None:
            self.engine.install(self)

    def _install_vision_capture(self) -> None:
        """Hooks that capture the vision-tower internals the pre-LLM pruner needs."""
        raise NotImplementedError

    def _before_forward(self, module, args, kwargs):
        past = self.prefill_tracker.cached_tokens(kwargs)
        if past > 0:
            return self.prefill_tracker.decode_step(args, kwargs, past)
        self._groups = None
        return self._before_prefill(module, args, kwargs, kwargs.get("input_ids", args[0] if args else None))

    def _before_prefill(self, module, args, kwargs, input_ids: torch.Tensor | None):
        """The pre-hook of a prefill: select the visual tokens, or leave the forward to the model."""
        raise NotImplementedError

    def _after_forward(self, module, args, kwargs, output):
        self.prefill_tracker.record_cache(output)

    def _groups_for(self, valid: torch.Tensor) -> TokenGroups | None:
        return self._groups

    def _set_engine_groups(
        self,
        packed: Packed,
        length: int,
        kept_positions: list[list[torch.Tensor]],
        kept_origins: list[list[torch.Tensor]],
        grids: list[list[tuple[int, ...]]],
    ) -> None:
        """Let the in-LLM engine prune among the visual tokens kept in a `length`-token prompt (per
        sample and group: their prompt positions and their indices in the group's own order), which
        sit at their packed slots."""
        if self.engine is not None:
            slot_of = packed.slots(length)
            positions = [[slot_of[b, p] for p in per] for b, per in enumerate(kept_positions)]
            self._groups = TokenGroups(positions, kept_origins, grids)

    def _packed_forward(self, kwargs: dict, packed: Packed, prefill, cleared: dict) -> tuple[tuple, dict]:
        """The pre-hook's result for a packed prefill, whose decode-time state `prefill` is tracked
        for the decoding steps. `cleared`: the media inputs the model must not encode again."""
        self.prefill_tracker.prefill = prefill
        return (), {
            **kwargs,
            **cleared,
            "input_ids": None,
            "mm_encoder_outputs": None,
            "inputs_embeds": packed.embeds,
            "attention_mask": packed.mask,
            "position_ids": packed.position_ids,
        }
