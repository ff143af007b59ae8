"""Qwen2-VL and Qwen2.5-VL in vLLM with fewer image tokens (M-RoPE).

The processor shrinks each image's `<|image_pad|>` run to min(budget, natural) tokens (fraction
budgets follow Qwen's dynamic resolution). The model selects that many merged tokens and, as vLLM's
EVS does for videos, appends four position columns to each item's embeddings: the kept tokens'
original (t, h, w) M-RoPE offsets and where the text after the item continues. vLLM's runner hands
them back to the model's `recompute_mrope_positions`, which places the kept tokens at their
original positions and strips the columns (patches.py enables that path for images).

Text after a pruned image continues at `base + llm_grid_w`, vLLM's EVS convention; text after an
unpruned item (a budget >= natural, or a video) continues where stock Qwen puts it (max offset + 1),
so full budgets reproduce stock positions exactly. The two differ only for images taller than wide.
`get_mrope_input_positions` applies the same rule, so a request whose image is served from the
prefix cache (and never re-gathered) gets the same positions as a cold run.

VisionZip and FoPru rank merged tokens by the mean attention their patches receive in a
full-attention block of the vision tower (Qwen's tower has no [CLS]), recomputed from the q/k that
block feeds its attention kernel; Qwen2.5-VL's windowed blocks are skipped, as in the transformers
adapter.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import numpy as np
import torch
from vllm.distributed import tensor_model_parallel_all_reduce
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.model_executor.models.qwen2_vl import (
    Qwen2VLDummyInputsBuilder,
    Qwen2VLForConditionalGeneration,
    Qwen2VLMultiModalProcessor,
    Qwen2VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement

from tokenprune.adapters.vllm.config import METHODS, PruneConfig, parse_config
from tokenprune.adapters.vllm.patches import mark_pruning, patches_active
from tokenprune.adapters.vllm.selection import select_rows
from tokenprune.attention import mean_attention_received
from tokenprune.pruners import VisualTokens


def qwen_prune_config(hf_config, family: str) -> PruneConfig:
    return parse_config(hf_config, family, METHODS)


def media_positions(t: int, h: int, w: int, t_factor: float = 1.0, pruned: bool = False) -> torch.Tensor:
    """(t*h*w, 4) int64 rows: M-RoPE (t, h, w) offsets of a media item's merged tokens, in the order
    the encoder emits them, and the offset where following text continues: the grid width for a
    pruned item (vLLM's EVS convention), max offset + 1 (stock Qwen) otherwise."""
    grid = np.indices((t, h, w)).reshape(3, -1)
    if t_factor != 1.0:
        grid[0] = (grid[0] * t_factor).astype(np.int64)
    positions = torch.from_numpy(np.ascontiguousarray(grid.T)).long()
    text_offset = w if pruned else int(positions.max()) + 1
    end = torch.full((positions.shape[0], 1), text_offset, dtype=torch.long)
    return torch.cat([positions, end], dim=1)


@contextmanager
def capture_merged_attention(block, grid_thw: list[list[int]], merge_unit: int, into: dict):
    """While active, store in `into["attention"]` the mean attention received by each merged token
    of one forward of the vision `block` (N_merged,), in the tower's token order: head-averaged,
    within each image frame (the block's full-attention segments), pooled over the merge group.

    It reads the rotated q/k the block passes to its attention kernel (vLLM's encoder attention
    never forms probabilities). Under tensor parallelism each rank holds a slice of the heads, so
    per-rank head sums are all-reduced before averaging."""
    attention = block.attn
    local_heads = attention.num_attention_heads_per_partition
    segments = [h * w for t, h, w in grid_thw for _ in range(t)]

    def hook(module, args, kwargs):
        query = kwargs["query"] if "query" in kwargs else args[0]
        key = kwargs["key"] if "key" in kwargs else args[1]
        query, key = query.transpose(1, 2), key.transpose(1, 2)  # (1, H, N, d)
        scores = torch.cat(
            [
                mean_attention_received(q, k, module.scale)[0]
                for q, k in zip(query.split(segments, dim=2), key.split(segments, dim=2))
            ]
        )
        if attention.tp_size > 1:
            scores = tensor_model_parallel_all_reduce(scores * local_heads) / (
                local_heads * attention.tp_size
            )
        into["attention"] = scores.view(-1, merge_unit).mean(dim=1)

    handle = attention.attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield into
    finally:
        handle.remove()


class _PrunedInfo:
    family: str

    def get_num_image_tokens(self, *, image_width, image_height, image_processor, mm_kwargs) -> int:
        natural = super().get_num_image_tokens(
            image_width=image_width,
            image_height=image_height,
            image_processor=image_processor,
            mm_kwargs=mm_kwargs,
        )
        return qwen_prune_config(self.get_hf_config(), self.family).keep_count(natural)


class _PrunedProcessor:
    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        config = qwen_prune_config(self.info.get_hf_config(), self.info.family)
        return [self._shrink(update, config) if update.modality == "image" else update for update in updates]

    @staticmethod
    def _shrink(update: PromptReplacement, config: PruneConfig) -> PromptReplacement:
        def replacement(item_idx: int):
            tokens = update.replacement(item_idx) if callable(update.replacement) else update.replacement
            if not isinstance(tokens, list):
                raise TypeError(
                    f"tokenprune: unexpected image replacement {type(tokens).__name__} from this vLLM version; "
                    "only plain token lists are supported"
                )
            return tokens[: config.keep_count(len(tokens))]

        return dataclasses.replace(update, replacement=replacement)


class _PrunedModel:
    """Selection and position columns shared by both Qwen families."""

    family: str

    def _init_pruning(self, vllm_config) -> None:
        self.tokenprune = qwen_prune_config(vllm_config.model_config.hf_config, self.family)
        if not patches_active():
            import vllm

            raise RuntimeError(
                f"tokenprune: {self.family} pruning needs the M-RoPE runner patches, which are tested only "
                f"with vLLM 0.32.x (this is {vllm.__version__}); LLaVA pruning works without them"
            )
        multimodal_config = vllm_config.model_config.multimodal_config
        if multimodal_config.video_pruning_rate:
            raise ValueError(
                "tokenprune: --video-pruning-rate (EVS) cannot be combined with tokenprune's image pruning"
            )
        if self.tokenprune.needs_vision_attention:
            # Both would run the vision blocks without the module hook that reads their attention.
            if multimodal_config.mm_encoder_tp_mode == "data":
                raise ValueError(
                    f"tokenprune: {self.tokenprune.method} reads vision-tower attention, which "
                    "mm_encoder_tp_mode='data' splits across ranks; use the default 'weights' mode, or "
                    "divprune, uniform or random"
                )
            if vllm_config.compilation_config.compile_mm_encoder:
                raise ValueError(
                    f"tokenprune: {self.tokenprune.method} reads vision-tower attention through a module "
                    "hook, which a compiled encoder bypasses; turn off compile_mm_encoder, or use divprune, "
                    "uniform or random"
                )
        mark_pruning(multimodal_config)

    def _merge_size(self) -> int:
        return self.config.vision_config.spatial_merge_size

    def attention_block(self) -> int:
        """Vision block whose attention scores the merged tokens: the last one (all attend fully)."""
        return len(self.visual.blocks) - 1

    def merge_order(self, grid_thw: list[list[int]]) -> torch.Tensor | None:
        """Original merge-group index of each group in the tower's internal order (None: identity)."""
        return None

    def _process_image_input(self, image_input):
        grid_thw = image_input["image_grid_thw"]
        if not self.tokenprune.needs_vision_attention:
            return self._pruned_images(super()._process_image_input(image_input), grid_thw)
        if image_input["type"] != "pixel_values":
            raise ValueError(
                f"tokenprune: {self.tokenprune.method} needs the vision tower's attention, so images must be "
                "passed as pixels, not as precomputed embeddings"
            )
        grid = grid_thw.tolist()
        block = self.visual.blocks[self.attention_block()]
        with capture_merged_attention(block, grid, self._merge_size() ** 2, {}) as captured:
            embeds = super()._process_image_input(image_input)
        if "attention" not in captured:
            raise RuntimeError(
                f"tokenprune: {self.tokenprune.method} found no attention in vision block "
                f"{self.attention_block()}; this vLLM version runs the tower differently"
            )
        attention = captured["attention"]
        order = self.merge_order(grid)
        if order is not None:
            attention = attention[order.to(attention.device)]
        return self._pruned_images(embeds, grid_thw, attention.split([len(e) for e in embeds]))

    def _pruned_images(self, embeds, grid_thw, attention=None) -> tuple[torch.Tensor, ...]:
        merge = self._merge_size()
        out = []
        for i, (features, (t, h, w)) in enumerate(zip(embeds, grid_thw.tolist())):
            grid = (h // merge, w // merge) if t == 1 else (t, h // merge, w // merge)
            tokens = VisualTokens(features=features, grid=grid, attention=attention[i] if attention else None)
            kept = select_rows(self.tokenprune, tokens, f"image {i} of the batch")
            pruned = len(kept) < len(features)
            positions = media_positions(t, h // merge, w // merge, pruned=pruned).to(features.device)
            out.append(torch.cat([features[kept], positions[kept].to(features.dtype)], dim=1))
        return tuple(out)

    def _full_videos(self, embeds, grid_thw, second_per_grid_ts) -> tuple[torch.Tensor, ...]:
        merge = self._merge_size()
        tokens_per_second = getattr(self.config.vision_config, "tokens_per_second", 1.0)
        seconds = second_per_grid_ts.tolist() if second_per_grid_ts is not None else [1.0] * len(grid_thw)
        out = []
        for features, (t, h, w), second in zip(embeds, grid_thw.tolist(), seconds):
            positions = media_positions(t, h // merge, w // merge, second * tokens_per_second)
            out.append(torch.cat([features, positions.to(features.device, features.dtype)], dim=1))
        return tuple(out)

    def get_mrope_input_positions(self, input_tokens, mm_features):
        """Initial positions for the shortened prompt, by the same rule the runner applies when it
        gathers the embeddings; image tokens get placeholder offsets until then."""
        pieces, next_position, start = [], 0, 0
        by_offset = sorted(mm_features, key=lambda f: f.mm_position.offset)
        for feature, (offset, t, h, w, t_factor) in zip(by_offset, self.iter_mm_grid_thw(mm_features)):
            text = offset - start
            pieces.append(np.broadcast_to(np.arange(text), (3, text)) + next_position)
            base = next_position + text
            length = feature.mm_position.length
            media = media_positions(t, h, w, t_factor, pruned=length < t * h * w).numpy()
            pieces.append(media[:length, :3].T + base)
            next_position = base + int(media[0, 3])
            start = offset + length
        if start < len(input_tokens):
            text = len(input_tokens) - start
            pieces.append(np.broadcast_to(np.arange(text), (3, text)) + next_position)
        positions = np.concatenate(pieces, axis=1)
        return torch.from_numpy(positions), int(positions.max()) + 1 - len(input_tokens)

    def recompute_mrope_positions(
        self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens
    ):
        """Called by the model runner with the media items (or the rest of a partly computed one)
        of the scheduled window, in prompt order: writes each kept token's position (the position
        after its <|vision_start|> plus its (t, h, w) column) and strips the four columns. Text
        positions are already final (`get_mrope_input_positions` applies the same rule).

        vLLM's EVS version (evs.recompute_mrope_positions) finds an item's <|vision_start|> by
        comparing token indices with counts of media tokens, which picks the wrong item for the
        second and later images when text before them is longer than the images before them."""
        ids = torch.as_tensor(input_ids, device=mrope_positions.device)
        is_media = (ids == self.config.image_token_id) | (ids == self.config.video_token_id)
        before = torch.cat([is_media.new_zeros(1), is_media[:-1]])
        after = torch.cat([is_media[1:], is_media.new_zeros(1)])
        starts = (is_media & ~before).nonzero().squeeze(1).tolist()
        ends = [int(i) + 1 for i in (is_media & ~after).nonzero().squeeze(1).tolist()]
        positions = mrope_positions.clone()
        if multimodal_embeddings:
            first = next(run for run, end in enumerate(ends) if end > num_computed_tokens)
            for i, item in enumerate(multimodal_embeddings):
                start = starts[first + i]
                at = start + (max(num_computed_tokens - start, 0) if i == 0 else 0)
                base = positions[0, start - 1] + 1
                columns = item[:, -4:-1].T.long().to(positions.device)
                positions[:, at : at + item.shape[0]] = columns + base
        delta = int(positions.max()) + 1 - ids.numel()
        return [item[:, :-4] for item in multimodal_embeddings], positions, delta


class TokenPruneQwen2_5_VLProcessingInfo(_PrunedInfo, Qwen2_5_VLProcessingInfo):
    family = "Qwen2.5-VL"


class TokenPruneQwen2_5_VLMultiModalProcessor(_PrunedProcessor, Qwen2_5_VLMultiModalProcessor):
    pass


@MULTIMODAL_REGISTRY.register_processor(
    TokenPruneQwen2_5_VLMultiModalProcessor,
    info=TokenPruneQwen2_5_VLProcessingInfo,
    dummy_inputs=Qwen2_5_VLDummyInputsBuilder,
)
class TokenPruneQwen2_5_VLForConditionalGeneration(_PrunedModel, Qwen2_5_VLForConditionalGeneration):
    """Uses the in-tree EVS hooks: with pruning flagged, the parent routes every image and video
    through `_postprocess_*_embeds_evs` and disables encoder CUDA graphs. Images are selected in
    `_process_image_input`, where the tower's attention is at hand."""

    family = "Qwen2.5-VL"

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        self._init_pruning(vllm_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)

    def attention_block(self) -> int:
        """The last full-attention block: the others attend within windows only."""
        return max(self.visual.fullatt_block_indexes)

    def merge_order(self, grid_thw: list[list[int]]) -> torch.Tensor:
        """The tower permutes merge groups by window, image by image; invert that permutation."""
        window_index, offset = [], 0
        for t, h, w in grid_thw:
            window_index.append(self.visual.get_window_index_thw(t, h, w)[0] + offset)
            offset += t * (h // self._merge_size()) * (w // self._merge_size())
        return torch.argsort(torch.cat(window_index))

    def _postprocess_image_embeds_evs(self, image_embeds_split, image_input):
        return image_embeds_split  # selected, with position columns, by _process_image_input

    def _postprocess_video_embeds_evs(self, video_embeds_split, video_input):
        return self._full_videos(
            video_embeds_split, video_input["video_grid_thw"], video_input.get("second_per_grid_ts")
        )


class TokenPruneQwen2VLProcessingInfo(_PrunedInfo, Qwen2VLProcessingInfo):
    family = "Qwen2-VL"


class TokenPruneQwen2VLMultiModalProcessor(_PrunedProcessor, Qwen2VLMultiModalProcessor):
    pass


@MULTIMODAL_REGISTRY.register_processor(
    TokenPruneQwen2VLMultiModalProcessor,
    info=TokenPruneQwen2VLProcessingInfo,
    dummy_inputs=Qwen2VLDummyInputsBuilder,
)
class TokenPruneQwen2VLForConditionalGeneration(_PrunedModel, Qwen2VLForConditionalGeneration):
    """Qwen2-VL has no EVS hooks in vLLM 0.32: selection and position columns go in
    `_process_*_input`, and the class declares the pruning interface the runner checks for."""

    family = "Qwen2-VL"
    supports_multimodal_pruning = True

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        self._init_pruning(vllm_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)

    def _process_video_input(self, video_input):
        return self._full_videos(
            super()._process_video_input(video_input),
            video_input["video_grid_thw"],
            video_input.get("second_per_grid_ts"),
        )

    def get_encoder_cudagraph_config(self):
        # Encoder CUDA graphs call the tower directly, bypassing the selection above.
        return dataclasses.replace(super().get_encoder_cudagraph_config(), modalities=[])
