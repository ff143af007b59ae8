"""M-RoPE positions of the pruned Qwen models, checked against vLLM's own code without an engine:
stock Qwen2.5-VL positions (full budget), vLLM's EVS convention (pruned images: text continues at
base + merged grid width), and vLLM's EVS recomputation from our position columns."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration
from vllm.multimodal.video_prune.evs import compute_mrope_for_media, recompute_mrope_positions

from tokenprune.adapters.vllm.qwen import _PrunedModel, media_positions

IMAGE, VIDEO, START, END, TEXT = 6, 7, 4, 5, 9


class Model:
    config = SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=2, tokens_per_second=2))
    iter_mm_grid_thw = Qwen2_5_VLForConditionalGeneration.iter_mm_grid_thw
    stock_positions = Qwen2_5_VLForConditionalGeneration.get_mrope_input_positions
    pruned_positions = _PrunedModel.get_mrope_input_positions


def prompt(images: list[tuple[tuple[int, int], int]], before: int = 3, after: int = 4):
    """Token ids and feature specs for text, then per image (grid (h, w) in patches, kept count)."""
    ids, features = [TEXT] * before, []
    for (h, w), kept in images:
        ids.append(START)
        features.append(
            SimpleNamespace(
                modality="image",
                mm_position=SimpleNamespace(offset=len(ids), length=kept),
                data={"image_grid_thw": SimpleNamespace(data=torch.tensor([1, h, w]))},
            )
        )
        ids += [IMAGE] * kept + [END] + [TEXT] * 2
    return ids + [TEXT] * after, features


def columns(h: int, w: int, kept: torch.Tensor) -> torch.Tensor:
    return media_positions(1, h // 2, w // 2, pruned=len(kept) < h * w // 4)[kept].T


@pytest.mark.parametrize("grid", [(8, 8), (12, 4), (4, 12)])
def test_full_budget_reproduces_stock_positions(grid):
    ids, features = prompt([(grid, grid[0] * grid[1] // 4)])
    stock, stock_delta = Model().stock_positions(ids, features)
    ours, delta = Model().pruned_positions(ids, features)
    assert torch.equal(ours, stock) and delta == stock_delta
    n = grid[0] * grid[1] // 4
    recomputed, recomputed_delta = recompute_mrope_positions(
        torch.tensor(ids), [columns(*grid, torch.arange(n))], ours.clone(), 0, START, IMAGE, VIDEO
    )
    assert torch.equal(recomputed, stock) and recomputed_delta == stock_delta


def test_pruned_columns_follow_vllms_evs_columns():
    """For a pruned image our columns are EVS's own (compute_mrope_for_media): (t, h, w, grid w)."""
    for t, h, w in [(1, 8, 8), (1, 12, 4), (1, 4, 12)]:
        evs = compute_mrope_for_media(torch.tensor([t, h, w]), 2)
        assert torch.equal(media_positions(t, h // 2, w // 2, pruned=True), evs)


def test_pruned_tokens_keep_their_grid_positions_and_text_is_unchanged_by_recomputation():
    """The runner's recomputation (cold run) and our initial positions (what a prefix-cache hit
    keeps) agree on every text token; kept image tokens sit at their original (t, h, w)."""
    kept = [torch.tensor([0, 5, 10, 15]), torch.tensor([0, 11])]
    ids, features = prompt([((8, 8), 4), ((12, 4), 2)])
    initial, initial_delta = Model().pruned_positions(ids, features)
    recomputed, delta = recompute_mrope_positions(
        torch.tensor(ids),
        [columns(8, 8, kept[0]), columns(12, 4, kept[1])],
        initial.clone(),
        0,
        START,
        IMAGE,
        VIDEO,
    )
    is_text = torch.tensor([i not in (IMAGE, VIDEO) for i in ids])
    assert torch.equal(recomputed[:, is_text], initial[:, is_text]) and delta == initial_delta
    first = features[0].mm_position.offset
    base = int(recomputed[0, first - 1]) + 1
    # image 1: 4x4 merged grid, tokens 0, 5, 10, 15 are its diagonal
    assert recomputed[:, first : first + 4].T.tolist() == [[base, base + i, base + i] for i in range(4)]
    # text after a pruned image continues at base + merged grid width (EVS), also for the tall
    # image 2 (6 x 2 merged tokens), where stock Qwen would continue at base + 6
    assert int(recomputed[0, first + 4]) == base + 4
    second = features[1].mm_position.offset
    base = int(recomputed[0, second - 1]) + 1
    assert recomputed[:, second : second + 2].T.tolist() == [[base, base, base], [base, base + 5, base + 1]]
    assert int(recomputed[0, second + 2]) == base + 2
