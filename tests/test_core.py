"""Core contract: budgets, selection algorithms against reference computations, compose, apply."""

from __future__ import annotations

import math

import pytest
import torch

import tokenprune as tp
from tokenprune.budget import resolve_budget
from tokenprune.pruners.base import LayerContext, VisualTokens
from tokenprune.pruners.baselines import strided_grid
from tokenprune.pruners.divprune import max_min_diverse
from tokenprune.pruners.visionzip import merge_into_targets

PRE_LLM = [tp.DivPrune, tp.VisionZip, tp.FoPru, tp.RandomPrune, tp.UniformPrune]


@pytest.mark.parametrize("bad", [0, -3, 1.5, 0.0, float("nan"), -0.2])
@pytest.mark.parametrize("cls", [*PRE_LLM, tp.FastV, tp.Feather])
def test_bad_budget_values_raise_value_error(cls, bad):
    with pytest.raises(ValueError):
        cls(bad)


@pytest.mark.parametrize("bad", ["64", None, True, [64]])
def test_bad_budget_types_raise_type_error(bad):
    with pytest.raises(TypeError):
        tp.DivPrune(bad)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="positions"):
        tp.DivPrune(8, positions="shift")
    with pytest.raises(ValueError, match="strategy"):
        tp.FoPru(8, strategy="column")
    with pytest.raises(ValueError, match="contextual"):
        tp.VisionZip(8, contextual=-1)
    with pytest.raises(ValueError, match="stage_ratio"):
        tp.Feather(8, stage_ratio=0.0)


@pytest.mark.parametrize(
    ("budget", "available", "expected"),
    [(64, 576, 64), (600, 576, 576), (0.25, 576, 144), (1.0, 7, 7), (0.01, 10, 1)],
)
def test_resolve_budget(budget, available, expected):
    assert resolve_budget(budget, available) == expected


def divprune_reference(features: torch.Tensor, k: int) -> torch.Tensor:
    """DivPrune as published: recompute the min distance to all picks at every step, O(k^2 N)."""
    unit = features / features.norm(dim=-1, keepdim=True)
    distance = 1.0 - unit @ unit.T
    picks: list[int] = []
    for i in range(k):
        if i == 0:
            scores = distance.topk(2, dim=0, largest=False).values[1]
        else:
            scores = distance[picks].min(dim=0).values
        picks.append(int(scores.argmax()))
    return torch.tensor(picks)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    ("n", "k"), [(576, 64), (100, 37), (50, 50), (1500, 40)]
)  # 1500: blockwise similarity
def test_divprune_matches_reference(seed, n, k):
    features = torch.randn(n, 48, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(max_min_diverse(features, k), divprune_reference(features, k))


def test_divprune_never_repeats_on_duplicate_tokens():
    features = torch.ones(20, 8)  # all identical: the reference picks index 0 over and over
    picks = max_min_diverse(features, 10)
    assert len(set(picks.tolist())) == 10


def tokens(n=36, grid=(6, 6), seed=0, attention=True):
    g = torch.Generator().manual_seed(seed)
    return VisualTokens(
        features=torch.randn(n, 16, generator=g),
        grid=grid,
        attention=torch.rand(n, generator=g) if attention else None,
        keys=torch.randn(n, 8, generator=g),
    )


@pytest.mark.parametrize("cls", PRE_LLM)
@pytest.mark.parametrize("budget", [1, 5, 17, 36, 100, 0.5])
def test_pre_llm_budgets_are_exact_sorted_and_unique(cls, budget):
    selection = cls(budget).select(tokens())
    expected = resolve_budget(cls(budget).budget, 36)
    assert len(selection.indices) == expected
    assert torch.equal(selection.indices, selection.indices.unique())
    if selection.features is not None:
        assert selection.features.shape == (expected, 16)


def test_fopru_rank_is_global_top_k_and_row_keeps_whole_rows():
    t = tokens()
    assert set(tp.FoPru(10).select(t).indices.tolist()) == set(t.attention.topk(10).indices.tolist())
    rows = t.attention.view(6, 6).sum(1).argsort(descending=True)
    kept = tp.FoPru(14, strategy="row").select(t).indices
    best_two = set((rows[:2, None] * 6 + torch.arange(6)).flatten().tolist())
    assert best_two <= set(kept.tolist())
    third_row = kept[(kept // 6) == rows[2]]
    assert set(third_row.tolist()) == set(
        (t.attention.view(6, 6)[rows[2]].topk(2).indices + rows[2] * 6).tolist()
    )


def test_visionzip_dominant_by_attention_and_merge_is_an_average():
    t = tokens()
    zipped = tp.VisionZip(12, contextual=3).select(t)
    dominant = set(t.attention.topk(9).indices.tolist())
    assert dominant <= set(zipped.indices.tolist())
    for i, index in enumerate(zipped.indices.tolist()):
        if index in dominant:
            assert torch.equal(zipped.features[i], t.features[index])
    # merge: every non-target row lands in its most similar target, targets are uniformly strided
    metric, values = torch.randn(10, 4), torch.randn(10, 3)
    targets, merged = merge_into_targets(metric, values, 3)
    assert targets.tolist() == [0, 3, 6]
    unit = torch.nn.functional.normalize(metric, dim=-1)
    for j, target in enumerate(targets.tolist()):
        members = [target] + [
            r
            for r in range(10)
            if r not in targets.tolist() and int((unit[r] @ unit[targets].T).argmax()) == j
        ]
        assert torch.allclose(merged[j], values[members].mean(0), atol=1e-6)


def test_visionzip_without_attention_raises():
    with pytest.raises(ValueError, match="attention"):
        tp.VisionZip(4).select(tokens(attention=False))


def test_random_prune_is_reproducible_and_seeded():
    t = tokens()
    assert torch.equal(
        tp.RandomPrune(9, seed=3).select(t).indices, tp.RandomPrune(9, seed=3).select(t).indices
    )
    assert not torch.equal(
        tp.RandomPrune(9, seed=3).select(t).indices, tp.RandomPrune(9, seed=4).select(t).indices
    )


@pytest.mark.parametrize(("grid", "k"), [((24, 24), 64), ((24, 24), 128), ((5, 7), 12), ((4, 6, 6), 40)])
def test_uniform_grid_spreads_over_rows_and_columns(grid, k):
    kept = strided_grid(grid, k)
    assert len(kept) == k and torch.equal(kept, kept.unique())
    if len(grid) == 2:
        rows, cols = kept // grid[1], kept % grid[1]
        assert rows.min() == 0 and rows.max() == grid[0] - 1
        assert cols.min() == 0 and cols.max() == grid[1] - 1


class FixedRows:
    def __init__(self, logits):
        self._logits = logits

    def logits(self, window=1, rope=True):
        return self._logits


def test_fastv_keeps_the_most_attended_image_tokens():
    length = 12
    logits = torch.full((1, 2, 1, length), -5.0)
    logits[0, :, 0, [4, 7, 9]] = 3.0
    image = torch.arange(3, 11)
    ctx = LayerContext(
        2,
        0,
        FixedRows(logits),
        [[image]],
        [[torch.arange(8)]],
        [[(2, 4)]],
        torch.ones(1, length, dtype=torch.bool),
    )
    kept = tp.FastV(3).select_layer(ctx)[0][0]
    assert image[kept].tolist() == [4, 7, 9]


def test_feather_first_stage_keeps_uniform_grid_and_scales_stage_budgets():
    length = 40
    logits = torch.randn(1, 2, 1, length)
    image = torch.arange(4, 40)  # a 6 x 6 grid
    origins = torch.arange(36)
    ctx = LayerContext(
        1, 0, FixedRows(logits), [[image]], [[origins]], [[(6, 6)]], torch.ones(1, length, dtype=torch.bool)
    )
    feather = tp.Feather(3, layers_at=(1, 2), stage_ratio=0.3, uniform_stride=3)
    first = feather.select_layer(ctx)[0][0]
    assert len(first) == math.ceil(3 / 0.3)
    assert {0, 3, 18, 21} <= set(origins[first].tolist())  # stride-3 grid points (0,0) (0,3) (3,0) (3,3)
    ctx.step = 1
    assert len(feather.select_layer(ctx)[0][0]) == 3


def test_compose_validation():
    composed = tp.compose(tp.DivPrune(16), tp.FastV(8))
    assert [p.stage for p in composed.stages] == ["pre_llm", "llm"]
    with pytest.raises(ValueError, match="order"):
        tp.compose(tp.FastV(8), tp.DivPrune(16))
    with pytest.raises(ValueError, match="one pruner per stage"):
        tp.compose(tp.DivPrune(16), tp.UniformPrune(8))
    with pytest.raises(ValueError, match="positions"):
        tp.compose(tp.DivPrune(16), tp.FastV(8, positions="reindex"))
    with pytest.raises(TypeError):
        tp.compose(tp.DivPrune(16), "fastv")
    with pytest.raises(ValueError):
        tp.compose()


def test_apply_rejects_unsupported_models_and_non_pruners():
    with pytest.raises(TypeError, match="LlavaForConditionalGeneration"):
        tp.apply(torch.nn.Linear(2, 2), tp.DivPrune(4))
    with pytest.raises(TypeError, match="pruner"):
        tp.apply(torch.nn.Linear(2, 2), "divprune")
