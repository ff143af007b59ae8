"""LLaVA-1.5 (`LlavaForConditionalGeneration`): CLIP tower, one run of placeholders per image."""

from __future__ import annotations

import math

import torch

from tokenprune.adapters.transformers.base import drop_unselected, text_rows
from tokenprune.adapters.transformers.decoder import DecoderStack, TokenGroups
from tokenprune.adapters.transformers.multimodal import MultimodalAdapter
from tokenprune.adapters.transformers.prefill_select import prefill_engine
from tokenprune.adapters.transformers.sequence import pack
from tokenprune.adapters.transformers.tower import TowerEngine
from tokenprune.adapters.transformers.vision import cls_attention_hook, feature_layer_index, split_runs
from tokenprune.pruners.base import VISION_NEEDS, VisualTokens


class LlavaAdapter(MultimodalAdapter):
    supported_stages = ("in_tower", "pre_llm", "prefill", "llm")

    def __init__(self, model, pruner, stats) -> None:
        super().__init__(model, pruner, stats)
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
        # "prefill" stage (GemFilter): select-then-prefill on the language model's input
        self.select = prefill_engine(DecoderStack(self.text_model), pruner, stats)
        self.tower = self._tower_engine(pruner.at("in_tower"))

    def _tower_engine(self, pruner) -> TowerEngine | None:
        if pruner is None:
            return None
        tower = self.vlm.vision_tower
        vision_model = getattr(tower, "vision_model", tower)  # older releases nest it
        blocks = vision_model.encoder.layers
        depth = feature_layer_index(self.model.config.vision_feature_layer, len(blocks)) + 1
        protected = int(hasattr(vision_model.embeddings, "class_embedding"))
        return TowerEngine(pruner, blocks, depth, self.tokens_per_image, protected)

    def install(self) -> None:
        # first, so that hooks capturing tower internals for a pre-LLM stage see the pruned tokens
        if self.tower is not None:
            self.tower.install(self)
        super().install()
        if self.select is not None:
            self.select.install(self)

    def _install_vision_capture(self) -> None:
        """Vision-side inputs a pruner needs are captured whenever the tower runs: inside this
        adapter's own encoding, and when generate() encodes images before prefill."""
        self._vision: dict = {}
        if self.pre.needs & {"attention", "keys"}:
            tower = self.vlm.vision_tower
            layers = getattr(tower, "vision_model", tower).encoder.layers  # older releases nest it
            layer = layers[feature_layer_index(self.model.config.vision_feature_layer, len(layers))]
            self.hook_before(layer, cls_attention_hook(self._vision))
        self.hook_after(self.vlm.multi_modal_projector, self._capture_projection)

    def _capture_projection(self, module, args, kwargs, output):
        self._vision["pre_projection"], self._vision["projected"] = args[0], output

    # -- hooks ---------------------------------------------------------------------------
    def _before_prefill(self, module, args, kwargs, input_ids):
        features = self._image_features(module, kwargs)
        if features is None:
            return None
        if input_ids is None:
            raise ValueError(
                "tokenprune needs input_ids (not inputs_embeds) to find the image tokens of LLaVA"
            )
        runs = self._image_runs(input_ids, len(features))
        if self.pre is None and self.tower is None:
            self._groups = TokenGroups.whole(runs, [[self.grid] * len(per) for per in runs])
            return None
        return self._prune_before_llm(module, kwargs, input_ids, runs, features)

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

    def _image_features(self, module, kwargs) -> list[torch.Tensor] | None:
        """Projected features per image: encoded here from pixel_values, or as generate() pre-encoded
        them (mm_encoder_outputs). None when the prompt has no image."""
        config = self.model.config
        layer = kwargs.get("vision_feature_layer")
        if layer is not None and layer != config.vision_feature_layer:
            raise ValueError(
                f"tokenprune prunes at the config's vision_feature_layer ({config.vision_feature_layer}), got {layer}"
            )
        if kwargs.get("pixel_values") is not None:
            if self.pre is None and self.tower is None:
                return list(kwargs["pixel_values"])  # only the count matters for in-LLM pruning
            output = module.get_image_features(
                pixel_values=kwargs["pixel_values"],
                vision_feature_layer=config.vision_feature_layer,
                vision_feature_select_strategy=config.vision_feature_select_strategy,
            )
        else:
            output = (kwargs.get("mm_encoder_outputs") or {}).get("image")
            if output is None:
                return None
        features = output.pooler_output if hasattr(output, "pooler_output") else output
        return list(features)

    def _image_tokens(self, module, features: list[torch.Tensor]) -> list[VisualTokens]:
        vision = getattr(self, "_vision", {})
        if self.pre is not None and self.pre.needs & VISION_NEEDS:
            projected = vision.get("projected")
            if (
                projected is None
                or projected.untyped_storage().data_ptr() != features[0].untyped_storage().data_ptr()
            ):
                raise ValueError(
                    f"{self.pre.name} needs vision-tower internals captured while the images were encoded; "
                    "encode images while the pruner is applied (pass pixel_values)"
                )
        needs = self.pre.needs if self.pre is not None else frozenset()
        return [
            VisualTokens(
                features=f,
                # the survivors of an in-tower stage are a subset of the grid, in grid order
                grid=self.grid if len(f) == self.tokens_per_image else (len(f),),
                attention=vision["attention"][i] if "attention" in vision else None,
                keys=vision["keys"][i] if "keys" in vision else None,
                pre_projection=vision["pre_projection"][i] if "pre_projection" in needs else None,
                project=module.multi_modal_projector,
            )
            for i, f in enumerate(features)
        ]

    def _prune_before_llm(self, module, kwargs, input_ids, runs, features):
        images = self._image_tokens(module, features)
        run = self.tower.take_run(len(images)) if self.tower is not None else None
        embeds = module.get_input_embeddings()(input_ids)
        keep = torch.ones_like(input_ids, dtype=torch.bool)
        text_mask = text_rows(input_ids, (self.image_token_id,), kwargs.get("attention_mask"))
        kept_origins: list[list[torch.Tensor]] = []
        image = 0
        for b, per_sample in enumerate(runs):
            origins = []
            for g, positions in enumerate(per_sample):
                tokens = images[image]
                survivors = run.origins[image].to(positions.device) if run is not None else None
                candidates = positions if survivors is None else positions[survivors]
                embeds[b, candidates] = tokens.features.to(embeds.device, embeds.dtype)
                if run is not None:
                    drop_unselected(keep, b, positions, survivors)
                    self.tower.record(run, self.stats, image, b, g, self.grid)
                if self.pre is not None:
                    kept = self.select_visual(
                        tokens, candidates, keep, embeds, b, g, self.grid, text_mask, origins=survivors
                    )
                    origins.append(kept if survivors is None else survivors[kept])
                else:
                    origins.append(survivors)
                image += 1
            kept_origins.append(origins)
        packed = pack(embeds, keep, kwargs.get("attention_mask"), kwargs.get("position_ids"), self.reindex)
        length = input_ids.shape[1]
        kept_positions = [[p[o] for p, o in zip(per, origins)] for per, origins in zip(runs, kept_origins)]
        self._set_engine_groups(
            packed, length, kept_positions, kept_origins, [[self.grid] * len(r) for r in runs]
        )
        return self._packed_forward(
            kwargs, packed, packed.prefill_state(length, self.reindex), {"pixel_values": None}
        )
