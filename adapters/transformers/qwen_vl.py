"""Qwen2-VL and Qwen2.5-VL (`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`):
dynamic resolution, 2x2 patch merging before the language model, M-RoPE, images and videos.

Pre-LLM pruners see the merged tokens of each image or video (grid (h, w) or (t, h, w) in merged
tokens). M-RoPE ids are computed by the model's own `get_rope_index` on the unpruned prompt and
sliced; decoding continues from the unpruned positions (`positions="keep"`) or right after the kept
tokens (`"reindex"`, where every kept token gets a contiguous 1-D position, as text has).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import nn

from tokenprune.adapters.transformers.base import drop_unselected, text_rows
from tokenprune.adapters.transformers.decoder import TokenGroups
from tokenprune.adapters.transformers.multimodal import MultimodalAdapter
from tokenprune.adapters.transformers.qwen_tower import QwenTowerEngine
from tokenprune.adapters.transformers.sequence import PackedPrefill, pack
from tokenprune.attention import mean_attention_received
from tokenprune.pruners.base import VisualTokens
from tokenprune.pruners.views import ViewTokens

# (kind, pixel kwarg, grid kwarg, feature getter, mm_token_type value)
KINDS = (
    ("image", "pixel_values", "image_grid_thw", "get_image_features", 1),
    ("video", "pixel_values_videos", "video_grid_thw", "get_video_features", 2),
)


@dataclass
class VisualGroup:
    """One image or video of one sample: its placeholder positions and merged-token grid."""

    kind: str
    item: int  # index among the batch's images (or videos), in grid_thw order
    positions: torch.Tensor
    grid: tuple[int, ...]  # (h, w) for images, (t, h, w) for videos


def visual_groups(
    input_ids: torch.Tensor, token_ids: dict[str, int], grids: dict[str, torch.Tensor | None], merge: int
) -> list[list[VisualGroup]]:
    """Assign placeholder tokens to images and videos in the order the model consumes grid_thw rows
    (batch-major); a video may span several placeholder runs (Qwen3-VL puts timestamps between frames)."""
    per_sample: list[list[VisualGroup]] = [[] for _ in range(len(input_ids))]
    for kind, token in token_ids.items():
        grid_thw = grids.get(kind)
        rows = grid_thw.tolist() if grid_thw is not None else []
        item = 0
        for b in range(len(input_ids)):
            positions = (input_ids[b] == token).nonzero().squeeze(1)
            start = 0
            while start < len(positions):
                if item >= len(rows):
                    raise ValueError(
                        f"the prompt has more {kind} tokens than {kind}_grid_thw describes ({len(rows)} {kind}s)"
                    )
                t, h, w = rows[item]
                grid = (h // merge, w // merge) if kind == "image" else (t, h // merge, w // merge)
                count = t * (h // merge) * (w // merge)
                if start + count > len(positions):
                    raise ValueError(
                        f"sample {b} has {len(positions) - start} {kind} tokens left for a {kind} of {count} "
                        f"merged tokens (grid_thw {rows[item]})"
                    )
                per_sample[b].append(VisualGroup(kind, item, positions[start : start + count], grid))
                start += count
                item += 1
        if item != len(rows):
            raise ValueError(f"{kind}_grid_thw describes {len(rows)} {kind}s, the prompt holds {item}")
    for groups in per_sample:
        groups.sort(key=lambda g: int(g.positions[0]))
    return per_sample


def merged_attention(block: nn.Module, kwargs: dict, hidden: torch.Tensor, merge_unit: int):
    """Mean attention each merged token's patches receive within their image (or frame) in the
    vision `block`, head-averaged and pooled over the merge group (N,), and the block's head-averaged
    keys pooled the same way (N, d); both in the tower's token order.

    q/k are recomputed from the block's fused qkv and 2-D rotary embedding, one attention segment
    (cu_seqlens) at a time, as the block's own attention runs.
    """
    attention = block.attn
    x = block.norm1(hidden)
    n = x.shape[0]
    q, k, _ = attention.qkv(x).reshape(n, 3, attention.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    rotary = sys.modules[type(attention).__module__].apply_rotary_pos_emb_vision
    q, k = rotary(q, k, *kwargs["position_embeddings"])
    q, k = q.transpose(0, 1)[None], k.transpose(0, 1)[None]  # (1, H, N, d)
    bounds = kwargs["cu_seqlens"].tolist()
    scores = torch.cat(
        [
            mean_attention_received(q[:, :, s:e], k[:, :, s:e], attention.scaling)[0]
            for s, e in zip(bounds[:-1], bounds[1:])
        ]
    )
    keys = k[0].mean(dim=0).float()
    return scores.view(-1, merge_unit).mean(dim=1), keys.view(-1, merge_unit, keys.shape[-1]).mean(dim=1)


@dataclass
class Encoded:
    """One run of the vision tower while the pruner was applied: the output object it returned
    (get_image_features / get_video_features return that same object), its grid_thw, and the merged
    tokens' attention and keys in original order when the pruner needs them."""

    output: object
    grid_thw: torch.Tensor
    attention: torch.Tensor | None = None
    keys: torch.Tensor | None = None


@dataclass
class QwenPrefill:
    """Decode-time state of a prefill whose visual tokens were pruned before the language model."""

    packed: PackedPrefill
    rope_deltas: torch.Tensor  # (B, 1) of the unpruned prompt

    def decode_kwargs(self, kwargs: dict, past: int) -> dict:
        """Positions of decoding steps in the coordinates the pruned prefill used."""
        packed = self.packed
        update = {}
        if kwargs.get("attention_mask") is not None:
            update["attention_mask"] = packed.decode_kwargs(kwargs, past)["attention_mask"]
        position_ids = kwargs.get("position_ids")
        if position_ids is None:  # the model's own rule on unpruned coordinates: arange + rope_deltas
            tokens = next(kwargs[k] for k in ("input_ids", "inputs_embeds") if kwargs.get(k) is not None)
            start = past + packed.length - packed.packed_length
            text = torch.arange(start, start + tokens.shape[1], device=tokens.device)
            position_ids = (text[None] + self.rope_deltas).expand(3, -1, -1)
        if packed.reindex:  # unpruned M-RoPE position -> count of kept tokens before it
            shift = self.rope_deltas + packed.dropped[:, None]
            position_ids = position_ids - shift.to(position_ids.device)
        update["position_ids"] = position_ids
        return update


class QwenVLAdapter(MultimodalAdapter):
    supported_stages = ("in_tower", "pre_llm", "llm")
    #: Qwen2.5-VL's tower attends within windows in most blocks
    windowed_tower = False
    #: vision-tower runs remembered until a prefill consumes them (generate() encodes before the prefill)
    max_encoded = 4

    def __init__(self, model, pruner, stats) -> None:
        super().__init__(model, pruner, stats)
        config = model.config
        self.merge = config.vision_config.spatial_merge_size
        self.token_ids = {"image": config.image_token_id, "video": config.video_token_id}
        inner = pruner.at("llm")
        if inner is not None and self.reindex and self.pre is None:
            raise ValueError(
                f"{inner.name} with positions='reindex' needs a pre-LLM pruner before it on M-RoPE models "
                "(layers before the pruning layer run on 3-D positions that cannot be renumbered); "
                "use positions='keep', or compose a pre-LLM pruner with positions='reindex'"
            )
        self._scores_needed = self.pre is not None and bool(self.pre.needs & {"attention", "keys"})
        in_tower = pruner.at("in_tower")
        self.tower = None
        if in_tower is not None:
            if self._scores_needed:
                raise ValueError(
                    f"{self.pre.name} scores the vision tower's attention, which an in-tower stage has "
                    "already shortened on Qwen-VL; compose the in-tower stage with a pre-LLM pruner that "
                    "reads the features only (DivPrune, RandomPrune, UniformPrune)"
                )
            self.tower = QwenTowerEngine(in_tower, self.vlm.visual, self.windowed_tower)
        self._tower_run: Encoded | None = None
        self._encoded: list[Encoded] = []

    def install(self) -> None:
        # the tower's grid_thw is recorded on every run: generate() may pass only its encodings on
        self.hook_before(self.vlm.visual, self._before_tower)
        self.hook_after(self.vlm.visual, self._after_tower)
        if self.tower is not None:
            self.tower.install(self)
        super().install()

    def _install_vision_capture(self) -> None:
        if self._scores_needed:
            self.hook_before(self.vlm.visual.blocks[self.attention_block()], self._score_block)

    # -- family specifics ----------------------------------------------------------------------
    def attention_block(self) -> int:
        """Vision block whose attention scores the merged tokens: the last full-attention block."""
        return len(self.vlm.visual.blocks) - 1

    def merge_order(self, grid_thw: torch.Tensor) -> torch.Tensor | None:
        """Original merge-group index of each group in the tower's internal order (None: identity)."""
        return None

    def visual_extras(self, output, kind: str) -> None:
        """Family hook: receives the vision-tower output of each image/video kind of a pruned prefill."""

    def after_pack(self, input_ids: torch.Tensor, packed) -> None:
        """Family hook: called with the packed prefill before the language model runs."""

    # -- vision tower ----------------------------------------------------------------------------
    def _before_tower(self, module, args, kwargs):
        grid_thw = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
        self._tower_run = Encoded(None, grid_thw)

    def _score_block(self, module, args, kwargs):
        run = self._tower_run
        if run is None:
            return
        hidden = args[0] if args else kwargs["hidden_states"]
        attention, keys = merged_attention(module, kwargs, hidden, self.merge**2)
        order = self.merge_order(run.grid_thw)
        if order is not None:
            attention, keys = attention[order], keys[order]
        run.attention, run.keys = attention.detach(), keys.detach()

    def _after_tower(self, module, args, kwargs, output):
        run, self._tower_run = self._tower_run, None
        run.output = output
        self._encoded = [*self._encoded[-(self.max_encoded - 1) :], run]

    def _encoding(self, output) -> Encoded | None:
        return next((e for e in self._encoded if e.output is output), None)

    # -- hooks ---------------------------------------------------------------------------------
    def _before_forward(self, module, args, kwargs):
        position_ids = kwargs.get("position_ids")
        if position_ids is not None and position_ids.dim() == 3 and position_ids.shape[0] == 4:
            # generate() prepends 1-D text positions (only used to detect packed sequences): drop them
            kwargs = {**kwargs, "position_ids": position_ids[1:]}
        # a forward left to the model still needs the trimmed position_ids
        return super()._before_forward(module, args, kwargs) or (args, kwargs)

    def _before_prefill(self, module, args, kwargs, input_ids):
        position_ids = kwargs.get("position_ids")
        precomputed = kwargs.get("mm_encoder_outputs") or {}
        grids = {
            kind: self._grid(kwargs, kind, precomputed.get(kind))
            for kind, pixel_key, *_ in KINDS
            if precomputed.get(kind) is not None or kwargs.get(pixel_key) is not None
        }
        if not grids:
            return args, kwargs
        if input_ids is None:
            raise ValueError(
                "tokenprune needs input_ids (not inputs_embeds) to find the visual tokens of Qwen-VL"
            )
        groups = visual_groups(input_ids, {k: self.token_ids[k] for k in grids}, grids, self.merge)
        if self.pre is None and self.tower is None:
            self._encoded.clear()
            self._groups = TokenGroups.whole(
                [[g.positions for g in per] for per in groups], [[g.grid for g in per] for per in groups]
            )
            return args, kwargs
        outputs = {
            kind: precomputed.get(kind)
            or getattr(module, getter)(kwargs[pixel_key], grids[kind], return_dict=True)
            for kind, pixel_key, _, getter, _ in KINDS
            if kind in grids
        }
        pruned = self._prune_before_llm(module, kwargs, input_ids, groups, grids, outputs, position_ids)
        self._encoded.clear()
        return pruned

    def _grid(self, kwargs: dict, kind: str, precomputed) -> torch.Tensor:
        """grid_thw of one kind: as given, or as the tower saw it when generate() pre-encoded it."""
        grid_key = f"{kind}_grid_thw"
        if kwargs.get(grid_key) is not None:
            return kwargs[grid_key]
        encoded = self._encoding(precomputed) if precomputed is not None else None
        if encoded is None:
            raise ValueError(
                f"tokenprune needs {grid_key} with the {kind}s (or {kind}s encoded while the pruner is applied)"
            )
        return encoded.grid_thw

    # -- pre-LLM selection -----------------------------------------------------------------------
    def _visual_tokens(self, kind: str, output) -> tuple[list, list, list]:
        """Per item of one kind: merged features, attention and keys (None when not needed)."""
        features = list(output.pooler_output)
        sizes = [len(f) for f in features]
        if not self._scores_needed:
            return features, [None] * len(sizes), [None] * len(sizes)
        encoded = self._encoding(output)
        if encoded is None or encoded.attention is None:
            raise ValueError(
                f"{self.pre.name} needs vision-tower attention captured while the {kind}s were encoded; "
                "encode them while the pruner is applied (pass pixel values)"
            )
        return features, list(encoded.attention.split(sizes)), list(encoded.keys.split(sizes))

    def _prune_before_llm(self, module, kwargs, input_ids, groups, grids, outputs, position_ids):
        attention_mask = kwargs.get("attention_mask")
        full_positions, rope_deltas = self._rope_index(module, kwargs, input_ids, grids, attention_mask)
        if position_ids is None:
            position_ids = full_positions
        embeds = module.get_input_embeddings()(input_ids)
        tokens: dict[str, tuple] = {}
        for kind, output in outputs.items():
            tokens[kind] = self._visual_tokens(kind, output)
            self.visual_extras(output, kind)
            is_kind = (input_ids == self.token_ids[kind])[..., None]
            features = torch.cat(tokens[kind][0]).to(embeds.device, embeds.dtype)
            embeds = embeds.masked_scatter(is_kind, features)
        keep = torch.ones_like(input_ids, dtype=torch.bool)
        text_mask = text_rows(input_ids, self.token_ids.values(), attention_mask)
        run = None
        if self.tower is not None:
            run = self.tower.take_run([len(f) for f in tokens["image"][0]] if "image" in tokens else [])
        kept_origins: list[list[torch.Tensor]] = []
        for b, per_sample in enumerate(groups):
            origins = []
            for g, group in enumerate(per_sample):
                features, attention, keys = (t[group.item] for t in tokens[group.kind])
                if run is not None:
                    survivors = run.kept[group.item].to(group.positions.device)
                    drop_unselected(keep, b, group.positions, survivors)
                    self.tower.record(run, self.stats, group.item, b, g, group.grid)
                    if self.pre is None:
                        origins.append(survivors)
                        continue
                    visual = VisualTokens(features=features[survivors], grid=(len(survivors),))
                    positions = group.positions[survivors]
                    kept = self.select_visual(
                        visual, positions, keep, embeds, b, g, group.grid, text_mask, origins=survivors
                    )
                    origins.append(survivors[kept])
                    continue
                visual = (
                    VisualTokens(features=features, grid=group.grid, attention=attention, keys=keys)
                    if group.kind == "image"
                    # frames as views: SplitByArea(pruner) turns the per-video budget into per-frame ones
                    else ViewTokens(
                        features, group.grid, attention, keys, views=(group.grid[1:],) * group.grid[0]
                    )
                )
                origins.append(
                    self.select_visual(visual, group.positions, keep, embeds, b, g, group.grid, text_mask)
                )
            kept_origins.append(origins)
        packed = pack(embeds, keep, attention_mask, position_ids, self.reindex)
        length = input_ids.shape[1]
        # rope_deltas maps unpruned text positions to the positions the model now uses
        module.rope_deltas = -packed.dropped[:, None] if self.reindex else rope_deltas
        self.after_pack(input_ids, packed)
        kept_positions = [
            [g.positions[o] for g, o in zip(per, origins)] for per, origins in zip(groups, kept_origins)
        ]
        self._set_engine_groups(
            packed, length, kept_positions, kept_origins, [[g.grid for g in per] for per in groups]
        )
        prefill = QwenPrefill(packed.prefill_state(length, self.reindex), rope_deltas)
        return self._packed_forward(
            kwargs, packed, prefill, {"pixel_values": None, "pixel_values_videos": None}
        )

    def _rope_index(self, module, kwargs, input_ids, grids, attention_mask):
        token_types = kwargs.get("mm_token_type_ids")
        if token_types is None:
            token_types = torch.zeros_like(input_ids, dtype=torch.int32)
            for kind, *_, value in KINDS:
                token_types[input_ids == self.token_ids[kind]] = value
        return module.get_rope_index(
            input_ids,
            mm_token_type_ids=token_types,
            image_grid_thw=grids.get("image"),
            video_grid_thw=grids.get("video"),
            second_per_grid_ts=kwargs.get("second_per_grid_ts"),  # Qwen2.5-VL's video time spacing
            attention_mask=attention_mask,
        )


class Qwen2_5_VLAdapter(QwenVLAdapter):
    """Qwen2.5-VL: the tower runs windowed attention on merge groups permuted by window; scores come
    from its last full-attention block and are mapped back to the original order."""

    windowed_tower = True

    def attention_block(self) -> int:
        return max(self.vlm.visual.fullatt_block_indexes)

    def merge_order(self, grid_thw: torch.Tensor) -> torch.Tensor:
        from transformers.vision_utils import get_vision_window_index

        tower = self.vlm.visual
        window_index, _ = get_vision_window_index(
            grid_thw, tower.spatial_merge_size, tower.window_size, tower.patch_size
        )
        return torch.argsort(window_index.to(grid_thw.device))
