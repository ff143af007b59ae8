"""M-RoPE positions of the pruned Qwen models, checked without an engine against vLLM's own code:
stock Qwen2.5-VL positions (full budget), vLLM's EVS convention (pruned images: text continues at
base + merged grid width, kept tokens at their (t, h, w)), and the runner-side recomputation from
our position columns, including several images and chunked prefill."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration
from vllm.multimodal.video_prune.evs import compute_mrope_for_media, recompute_mrope_positions

from tokenprune.adapters.vllm.qwen import _PrunedModel, media_positions

IMAGE, VIDEO, START, END, TEXT = 6, 7, 4, 5, 9


class Model:
    config = SimpleNamespace(
        vision_config=SimpleNamespace(spatial_merge_size=2, tokens_per_second=2),
        image_token_id=IMAGE,
        video_token_id=VIDEO,
    )
    iter_mm_grid_thw = Qwen2_5_VLForConditionalGeneration.iter_mm_grid_thw
    stock_positions = Qwen2_5_VLForConditionalGeneration.get_mrope_input_positions
    pruned_positions = _PrunedModel.get_mrope_input_positions
    recompute = _PrunedModel.recompute_mrope_positions


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
    """(4, K) position columns of the kept tokens of an (h, w)-patch image."""
    return media_positions(1, h // 2, w // 2, pruned=len(kept) < h * w // 4)[kept].T


def embeddings(h: int, w: int, kept: torch.Tensor) -> torch.Tensor:
    """What the model returns for an image: 2 feature columns, then the 4 position columns."""
    return torch.cat([torch.randn(len(kept), 2), columns(h, w, kept).T.float()], dim=1)


@pytest.mark.parametrize("grid", [(8, 8), (12, 4), (4, 12)])
def test_full_budget_reproduces_stock_positions(grid):
    ids, features = prompt([(grid, grid[0] * grid[1] // 4)])
    stock, stock_delta = Model().stock_positions(ids, features)
    ours, delta = Model().pruned_positions(ids, features)
    assert torch.equal(ours, stock) and delta == stock_delta
    n = grid[0] * grid[1] // 4
    item = embeddings(*grid, torch.arange(n))
    stripped, recomputed, recomputed_delta = Model().recompute(ids, [item], ours.clone(), 0)
    assert torch.equal(recomputed, stock) and recomputed_delta == stock_delta
    assert torch.equal(stripped[0], item[:, :2])


def test_pruned_columns_follow_vllms_evs_columns():
    """For a pruned image our columns are EVS's own (compute_mrope_for_media): (t, h, w, grid w)."""
    for t, h, w in [(1, 8, 8), (1, 12, 4), (1, 4, 12)]:
        evs = compute_mrope_for_media(torch.tensor([t, h, w]), 2)
        assert torch.equal(media_positions(t, h // 2, w // 2, pruned=True), evs)


def test_one_pruned_image_is_placed_as_vllms_evs_places_it():
    kept = torch.tensor([1, 2, 7])
    ids, features = prompt([((4, 12), 3)], before=20)
    initial, _ = Model().pruned_positions(ids, features)
    _, ours, delta = Model().recompute(ids, [embeddings(4, 12, kept)], initial.clone(), 0)
    evs, evs_delta = recompute_mrope_positions(
        torch.tensor(ids), [columns(4, 12, kept)], initial.clone(), 0, START, IMAGE, VIDEO
    )
    assert torch.equal(ours, evs) and delta == evs_delta


KEPT = [torch.tensor([0, 5, 10, 15]), torch.tensor([0, 11])]


def two_images():
    """A long text before a square (4x4 merged) and a tall (6x2 merged) image, both pruned."""
    return prompt([((8, 8), 4), ((12, 4), 2)], before=20)


def test_pruned_tokens_keep_their_grid_positions_and_text_is_unchanged_by_recomputation():
    """The runner's recomputation (cold run) and our initial positions (what a prefix-cache hit
    keeps) agree on every text token; kept image tokens sit at their original (t, h, w)."""
    ids, features = two_images()
    initial, initial_delta = Model().pruned_positions(ids, features)
    items = [embeddings(8, 8, KEPT[0]), embeddings(12, 4, KEPT[1])]
    _, recomputed, delta = Model().recompute(ids, items, initial.clone(), 0)
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


@pytest.mark.parametrize("split", [22, 25, 30, 33])
def test_chunked_prefill_gives_the_same_positions(split):
    """Two scheduling windows split at `split` (inside image 1, between the images, inside image
    2): the items of each window, the first one possibly partial, end at the one-shot positions."""
    ids, features = two_images()
    initial, _ = Model().pruned_positions(ids, features)
    items = [embeddings(8, 8, KEPT[0]), embeddings(12, 4, KEPT[1])]
    _, whole, whole_delta = Model().recompute(ids, items, initial.clone(), 0)
    runs = [(f.mm_position.offset, f.mm_position.offset + f.mm_position.length) for f in features]
    positions = initial.clone()
    for start, end in ((0, split), (split, len(ids))):
        window = [
            item[max(start - lo, 0) : min(end, hi) - lo]
            for item, (lo, hi) in zip(items, runs)
            if lo < end and hi > start
        ]
        _, positions, delta = Model().recompute(ids, window, positions, start)
    assert torch.equal(positions, whole) and delta == whole_delta
