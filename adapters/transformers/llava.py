"""LLaVA-1.5 (`LlavaForConditionalGeneration`): CLIP tower, one run of placeholders per image."""

from __future__ import annotations

import math
import time
from contextlib import ExitStack

import torch
from tokenprune.adapters.transformers.base import Adapter
from tokenprune.adapters.transformers.decoder import DecoderStack, LayerPruningEngine, TokenGroups
from tokenprune.adapters.transformers.sequence import PackedPrefill, pack
from tokenprune.adapters.transformers.vision import (
    capture_cls_attention,
    capture_input,
    feature_layer_index,
    split_runs,
)

from tokenprune.pruners.base import Selection, VisualTokens
from tokenprune.stats import PruneRecord


class LlavaAdapter(Adapter):
    supported_stages = ("pre_llm", "llm")

    def __init__(self, model, pruner, stats) -> None:
        super().__init__(model, pruner, stats)
        self.llava = model.model
        config = model.config
        if config.vision_feature_select_strategy != "default":
            raise ValueError(
                "tokenprune supports LLaVA with vision_feature_select_strategy='default' (patch tokens only), "
                f"got {config.vision_feature_select_strategy!r}"
            )
        vision = config.vision_config
        side = vision.image_size // vision.patch_size
        self.grid = (side, side)
        self.tokens_per_image = math.prod(self.grid)
        self.image_token_id = config.image_token_id
        self.pre = pruner.at("pre_llm")
        self.reindex = pruner.positions == "reindex"
        inner = pruner.at("llm")
        self.engine = (
            LayerPruningEngine(DecoderStack(self.llava.language_model), inner, stats, self._groups_for)
            if inner is not None
            else None
        )
        self._groups: TokenGroups | None = None
        self._prefill: PackedPrefill | None = None

    def install(self) -> None:
        self.hook_before(self.llava, self._before_forward)
        self.hook_after(self.llava, self._after_forward)
        if self.engine is not None:
            self.engine.install(self)

    def _groups_for(self, valid: torch.Tensor) -> TokenGroups | None:
        return self._groups

    # -- hooks ---------------------------------------------------------------------------
    def _before_forward(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("past_key_values")
        past = cache.get_seq_length() if cache is not None else 0
        if past > 0:
            if self._prefill is not None and cache is self._prefill.cache:
                return args, {**kwargs, **self._prefill.decode_kwargs(kwargs, past)}
            return None
        self._prefill, self._groups = None, None
        pixel_values = kwargs.get("pixel_values")
        if pixel_values is None:
            return None
        if input_ids is None:
            raise ValueError(
                "tokenprune needs input_ids (not inputs_embeds) to find the image tokens of LLaVA"
            )
        runs = self._image_runs(input_ids, pixel_values.shape[0])
        if self.pre is None:
            self._groups = TokenGroups(
                runs,
                [[torch.arange(len(r), device=r.device) for r in per] for per in runs],
                [[self.grid] * len(per) for per in runs],
            )
            return None
        return self._prune_before_llm(module, kwargs, input_ids, runs)

    def _after_forward(self, module, args, kwargs, output):
        if self._prefill is not None and self._prefill.cache is None:
            self._prefill.cache = output.past_key_values

    # -- pre-LLM selection -------------------------------------------------------------------
    def _image_runs(self, input_ids: torch.Tensor, n_images: int) -> list[list[torch.Tensor]]:
        is_image = input_ids == self.image_token_id
        if int(is_image.sum()) != n_images * self.tokens_per_image:
            raise ValueError(
                f"the prompt has {int(is_image.sum())} image tokens for {n_images} images of "
                f"{self.tokens_per_image} tokens each"
            )
        return [
            split_runs(is_image[b].nonzero().squeeze(1), self.tokens_per_image) for b in range(len(input_ids))
        ]

    def _image_tokens(self, module, kwargs) -> list[VisualTokens]:
        config = self.model.config
        feature_layer = kwargs.get("vision_feature_layer") or config.vision_feature_layer
        captured: dict = {}
        with ExitStack() as stack:
            if self.pre.needs & {"attention", "keys"}:
                tower = module.vision_tower
                layers = getattr(tower, "vision_model", tower).encoder.layers  # older releases nest it
                layer = layers[feature_layer_index(feature_layer, len(layers))]
                stack.enter_context(capture_cls_attention(layer, captured))
            if "pre_projection" in self.pre.needs:
                stack.enter_context(capture_input(module.multi_modal_projector, captured, "pre_projection"))
            output = module.get_image_features(
                pixel_values=kwargs["pixel_values"],
                vision_feature_layer=feature_layer,
                vision_feature_select_strategy=config.vision_feature_select_strategy,
            )
        features = output.pooler_output if hasattr(output, "pooler_output") else output
        return [
            VisualTokens(
                features=f,
                grid=self.grid,
                attention=captured["attention"][i] if "attention" in captured else None,
                keys=captured["keys"][i] if "keys" in captured else None,
                pre_projection=captured["pre_projection"][i] if "pre_projection" in captured else None,
                project=module.multi_modal_projector,
            )
            for i, f in enumerate(features)
        ]

    def _prune_before_llm(self, module, kwargs, input_ids, runs):
        images = self._image_tokens(module, kwargs)
        embeds = module.get_input_embeddings()(input_ids)
        all_features = torch.cat([t.features for t in images]).to(embeds.device, embeds.dtype)
        is_image = (input_ids == self.image_token_id)[..., None]
        embeds = embeds.masked_scatter(is_image, all_features)
        keep = torch.ones_like(input_ids, dtype=torch.bool)
        kept_origins: list[list[torch.Tensor]] = []
        image = 0
        for b, per_sample in enumerate(runs):
            origins = []
            for g, positions in enumerate(per_sample):
                tokens = images[image]
                started = time.perf_counter()
                selection: Selection = self.pre.select(tokens)
                seconds = time.perf_counter() - started
                dropped = torch.ones(len(positions), dtype=torch.bool, device=keep.device)
                dropped[selection.indices] = False
                keep[b, positions[dropped]] = False
                if selection.features is not None:
                    embeds[b, positions[selection.indices]] = selection.features.to(embeds.dtype)
                origins.append(selection.indices)
                self.stats.records.append(
                    PruneRecord(
                        stage="pre_llm",
                        method=self.pre.name,
                        sample=b,
                        group=g,
                        tokens_before=len(tokens),
                        tokens_after=len(selection.indices),
                        kept_indices=tuple(selection.indices.tolist()),
                        grid=self.grid,
                        seconds=seconds,
                    )
                )
                image += 1
            kept_origins.append(origins)
        packed = pack(embeds, keep, kwargs.get("attention_mask"), kwargs.get("position_ids"), self.reindex)
        self._prefill = PackedPrefill(
            input_ids.shape[1], packed.index.shape[1], packed.mask, packed.dropped, self.reindex
        )
        if self.engine is not None:
            slot_of = torch.full_like(input_ids, -1)
            for b in range(len(runs)):
                real = packed.valid[b].nonzero().squeeze(1)
                slot_of[b, packed.index[b, real]] = real
            self._groups = TokenGroups(
                [[slot_of[b, p[o]] for p, o in zip(runs[b], kept_origins[b])] for b in range(len(runs))],
                kept_origins,
                [[self.grid] * len(per) for per in runs],
            )
        new_kwargs = {
            **kwargs,
            "input_ids": None,
            "pixel_values": None,
            "inputs_embeds": packed.embeds,
            "attention_mask": packed.mask,
            "position_ids": packed.position_ids,
        }
        return (), new_kwargs
