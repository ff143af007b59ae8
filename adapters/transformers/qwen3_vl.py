"""Qwen3-VL (`Qwen3VLForConditionalGeneration`): the Qwen-VL adapter plus DeepStack, whose visual
features from intermediate vision blocks are added to the hidden states of the first language-model
layers at the visual positions. Those additions follow the pruning: pre-LLM selections keep the
DeepStack rows of the kept tokens, and in-LLM pruning drops them with the tokens."""

from __future__ import annotations

import torch

from tokenprune.adapters.transformers import compat
from tokenprune.adapters.transformers.qwen_vl import QwenVLAdapter


class Qwen3VLAdapter(QwenVLAdapter):
    def __init__(self, model, pruner, stats) -> None:
        in_tower = pruner.at("in_tower")
        if in_tower is not None:
            taps = list(model.model.visual.deepstack_visual_indexes)
            raise ValueError(
                f"{in_tower.name} cannot run inside Qwen3-VL's vision tower: DeepStack adds the outputs of "
                f"vision blocks {taps} to the language model at every image position, and pruning between "
                "blocks would leave those taps longer than the image tokens the language model receives; "
                "prune Qwen3-VL before or inside the language model"
            )
        super().__init__(model, pruner, stats)
        self.levels = len(self.vlm.visual.deepstack_visual_indexes)
        # per kind: one (tokens, D) tensor per DeepStack level, that kind's items concatenated
        self._parts: dict[str, list[torch.Tensor]] = {}
        # per DeepStack level: (B, L, D) additions in language-model input coordinates, 0 off visual slots
        self._deepstack: list[torch.Tensor] | None = None

    def install(self) -> None:
        super().install()
        # The adapter adds DeepStack features itself (same arithmetic as the model), so that they can
        # follow the sequence as it shortens.
        self.hook_before(self.text_model, self._before_text)
        self.hook_after(self.text_model, self._after_text)
        for i in range(min(self.levels, len(self.text_model.layers))):
            self.hook_after(self.text_model.layers[i], self._deepstack_hook(i))

    def visual_extras(self, output, kind: str) -> None:
        self._parts[kind] = compat.deepstack_features(output)

    def after_pack(self, input_ids: torch.Tensor, packed) -> None:
        index = packed.index[..., None]
        levels = []
        for level in range(self.levels):
            dense = None
            for kind, parts in self._parts.items():
                features = parts[level].to(packed.embeds.dtype)
                if dense is None:
                    dense = features.new_zeros(*input_ids.shape, features.shape[-1])
                is_kind = (input_ids == self.token_ids[kind])[..., None].to(dense.device)
                dense = dense.masked_scatter(is_kind, features)
            dense = dense.gather(1, index.expand(-1, -1, dense.shape[-1])) * packed.valid[..., None]
            levels.append(dense)
        self._parts = {}
        self._deepstack = levels

    def _before_text(self, module, args, kwargs):
        embeds = kwargs.get("deepstack_visual_embeds")
        if embeds is None:
            return None
        mask = kwargs["visual_pos_masks"]
        hidden = kwargs["inputs_embeds"]
        levels = []
        for features in embeds:
            dense = hidden.new_zeros(*mask.shape, features.shape[-1])
            dense[mask] = features.to(dense.dtype)
            levels.append(dense)
        self._deepstack = levels
        return args, {**kwargs, "deepstack_visual_embeds": None, "visual_pos_masks": None}

    def _after_text(self, module, args, kwargs, output):
        self._deepstack = None

    def _deepstack_hook(self, i: int):
        def hook(module, args, kwargs, output):
            if self._deepstack is None or i >= len(self._deepstack):
                return None
            dense = self._deepstack[i]
            prefill = self.engine.prefill if self.engine is not None else None
            stages = [s for s in prefill.stages if s.layer <= i] if prefill is not None else []
            if stages:
                stage = stages[-1]
                index = stage.index[..., None].expand(-1, -1, dense.shape[-1])
                dense = dense.gather(1, index) * stage.valid[..., None]
            return output + dense.to(output.dtype)

        return hook
