"""Adaptive budgets, recycling of dropped tokens and grid downsampling against reference computations."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import tokenprune as tp
from tokenprune.budget import resolve_budget
from tokenprune.pruners.adaptive import Ranking, calibrate, cover_count, mass_count, outlier_count
from tokenprune.pruners.base import VisualTokens
from tokenprune.pruners.recycle import summarize
from tokenprune.pruners.views import SplitByArea, ViewTokens


def tokens_with_attention(seed, n=48, grid=(6, 8), dim=16):
    generator = torch.Generator().manual_seed(seed)
    attention = torch.rand(n, generator=generator) ** 6  # a few dominant tokens
    return VisualTokens(
        features=torch.randn(n, dim, generator=generator),
        grid=grid,
        attention=attention,
        text=torch.randn(3, dim, generator=generator),
    )


def test_mass_rule_keeps_the_shortest_prefix_reaching_the_share():
    ranking = Ranking(torch.tensor([4, 2, 0, 1, 3]), torch.tensor([0.4, 0.3, 0.1, 0.1, 0.1]), 1.0)
    assert [mass_count(ranking, t) for t in (0.3, 0.4, 0.5, 0.7, 0.8, 0.95)] == [1, 1, 2, 2, 3, 5]


@pytest.mark.parametrize(("seed", "target"), [(0, 0.5), (1, 0.8), (2, 0.95)])
def test_adaptive_attention_mass_matches_numpy(seed, target):
    tokens = tokens_with_attention(seed)
    scores = tokens.attention.double().numpy()
    ranked = np.sort(scores)[::-1]
    expected = int(np.argmax(np.cumsum(ranked) / scores.sum() >= target)) + 1
    kept = tp.Adaptive(tp.FoPru(1.0), target=target, rule="mass").select(tokens).indices
    assert len(kept) == expected
    assert sorted(kept.tolist()) == sorted(np.argsort(-scores)[:expected].tolist())


def test_cover_rule_stops_once_every_token_is_explained():
    """Against the residuals computed directly: after the chosen picks S, every other token i keeps
    at most 1 - target of k_ii unexplained (k_ii - k_iS K_S^-1 k_Si), and one pick fewer does not."""
    tokens = tokens_with_attention(9)
    low_rank = torch.randn(48, 5, generator=torch.Generator().manual_seed(9)) @ torch.randn(5, 16)
    tokens.features = low_rank + 0.3 * tokens.features  # five directions and a little of the rest
    order = tp.CDPruner(1.0).rank(tokens, 48).order
    unit = torch.nn.functional.normalize(tokens.features.double(), dim=-1)
    quality = tp.CDPruner(1.0).quality(tokens).double()
    kernel = quality[:, None] * (unit @ unit.T) * quality[None, :]

    def worst(count):
        s = order[:count]
        rest = torch.ones(48, dtype=torch.bool)
        rest[s] = False
        explained = (kernel[rest][:, s] @ torch.linalg.solve(kernel[s][:, s], kernel[s][:, rest])).diagonal()
        return float((1 - explained / kernel.diagonal()[rest]).max())

    counts = []
    for target in (0.5, 0.8, 0.95):
        kept = tp.Adaptive(tp.CDPruner(1.0), target=target).select(tokens).indices
        assert kept.tolist() == sorted(order[: len(kept)].tolist())
        assert worst(len(kept)) <= 1 - target + 1e-4
        assert len(kept) == 1 or worst(len(kept) - 1) > 1 - target - 1e-4
        counts.append(len(kept))
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_adaptive_iqr_counts_outliers_like_prumerge():
    tokens = tokens_with_attention(3)
    scores = tokens.attention.double().numpy()
    q1, q3 = np.percentile(scores, [25, 75])
    expected = int((scores > q3 + 1.5 * (q3 - q1)).sum())
    assert outlier_count(tokens.attention) == expected > 0
    assert len(tp.Adaptive(tp.FoPru(1.0), rule="iqr").select(tokens).indices) == expected


def test_adaptive_is_bounded_by_min_tokens_and_the_budget_and_varies_per_image():
    tokens = tokens_with_attention(4)
    assert len(tp.Adaptive(tp.FoPru(5), target=0.99, rule="mass").select(tokens).indices) == 5
    assert len(tp.Adaptive(tp.FoPru(1.0), target=0.01, rule="mass", min_tokens=7).select(tokens).indices) == 7
    assert (
        len(tp.Adaptive(tp.FoPru(1.0), target=0.01, rule="mass", min_tokens=0.25).select(tokens).indices)
        == 12
    )
    assert torch.equal(
        tp.Adaptive(tp.CDPruner(9), target=1.0).select(tokens).indices, tp.CDPruner(9).select(tokens).indices
    )
    # CDPruner's picks cover the kernel: a low-rank image is covered by fewer tokens than a full-rank one
    low_rank = VisualTokens(features=torch.randn(48, 3) @ torch.randn(3, 16), grid=(6, 8), text=tokens.text)
    adaptive = tp.Adaptive(tp.CDPruner(1.0), target=0.95, rule="mass")
    assert len(adaptive.select(low_rank).indices) <= 3 < len(adaptive.select(tokens).indices)
    assert adaptive.select(tokens).indices.tolist() == sorted(
        tp.CDPruner(1.0).rank(tokens, 48).order[: len(adaptive.select(tokens).indices)].tolist()
    )
    with pytest.raises(ValueError, match="cover"):
        tp.Adaptive(tp.FoPru(8)).select(tokens)
    with pytest.raises(TypeError, match="ranks"):
        tp.Adaptive(tp.DivPrune(8))
    with pytest.raises(ValueError, match="target"):
        tp.Adaptive(tp.FoPru(8), target=1.5)
    with pytest.raises(ValueError, match="rule"):
        tp.Adaptive(tp.FoPru(8), rule="mean")


@pytest.mark.parametrize("target", [0.3, 0.6, 0.9])
def test_adaptive_layer_keeps_the_attention_mass_share_within_the_budget(target):
    scores = torch.rand(40, generator=torch.Generator().manual_seed(11)) ** 4
    ranked = np.sort(scores.double().numpy())[::-1]
    expected = int(np.argmax(np.cumsum(ranked) / ranked.sum() >= target)) + 1
    adaptive = tp.AdaptiveLayer(tp.FastV(1.0), target=target)
    kept = adaptive.keep_group(None, None, scores, 40)
    assert kept.tolist() == scores.topk(expected).indices.sort().values.tolist()
    assert len(adaptive.keep_group(None, None, scores, 3)) == min(3, expected)
    protected = scores.clone()
    protected[:5] = float("inf")  # tokens a pruner protects stay, whatever the mass
    assert set(range(5)) <= set(adaptive.keep_group(None, None, protected, 40).tolist())
    assert (
        tp.AdaptiveLayer(tp.FastV(8), min_tokens=6, target=0.01).keep_group(None, None, scores, 8).numel()
        == 6
    )
    assert tp.AdaptiveLayer(tp.Feather(8), target=0.5).for_depth(16).layers() == (8, 16)
    with pytest.raises(TypeError, match="in-LLM"):
        tp.AdaptiveLayer(tp.DART(8))


@pytest.mark.parametrize(
    "inner", [lambda b: tp.DivPrune(b), lambda b: tp.VisionZip(b, contextual=2), lambda b: tp.CDPruner(b)]
)
def test_recycle_keeps_the_inner_choice_and_conserves_the_dropped_mass(inner):
    generator = torch.Generator().manual_seed(8)
    tokens = tokens_with_attention(5)
    tokens.keys = torch.randn(48, 8, generator=generator)
    recycled = tp.Recycle(inner(12), slots=3).select(tokens)
    plain = inner(9).select(tokens)
    assert len(recycled.indices) == 12 and recycled.indices.tolist() == sorted(set(recycled.indices.tolist()))
    plain_features = plain.features if plain.features is not None else tokens.features[plain.indices]
    position = {int(i): row for row, i in enumerate(recycled.indices)}
    rows = [position[int(i)] for i in plain.indices]
    torch.testing.assert_close(recycled.features[rows], plain_features)
    summary_rows = [r for r in range(12) if r not in rows]
    dropped = torch.ones(48, dtype=torch.bool)
    dropped[plain.indices] = False
    summary_spots = recycled.indices[summary_rows]
    assert bool(dropped[summary_spots].all())  # summaries sit at dropped tokens' places
    # each dropped token joins the most similar seed; a summary is its cluster's mean
    unit = torch.nn.functional.normalize(tokens.features, dim=-1)
    seeds = unit[summary_spots]
    dropped_index = dropped.nonzero().squeeze(1)
    cluster = [
        int(torch.nonzero(summary_spots == i)[0]) if i in summary_spots else int((seeds @ unit[i]).argmax())
        for i in dropped_index.tolist()
    ]
    for c in range(3):
        members = dropped_index[[j for j, k in enumerate(cluster) if k == c]]
        torch.testing.assert_close(recycled.features[summary_rows[c]], tokens.features[members].mean(0))


@pytest.mark.parametrize(
    "adaptive",
    [
        lambda: tp.Adaptive(tp.CDPruner(1.0), target=0.5, rule="relevance", min_tokens=6),
        lambda: tp.Adaptive(tp.CDPruner(1.0), target=0.9, rule="mass"),
        lambda: tp.Adaptive(tp.FoPru(20), target=0.6, rule="mass", min_tokens=4),
    ],
)
def test_recycle_around_adaptive_recycles_within_the_count_the_rule_chooses(adaptive):
    """The rule's count per image stays the count; its first picks keep their places and features
    and the rest of the image becomes the summaries, as Recycle around that many fixed picks."""
    adaptive = adaptive()
    for seed in (1, 2, 3):
        tokens = tokens_with_attention(seed)
        picks = adaptive.picks(tokens)
        assert torch.equal(adaptive.select(tokens).indices, picks.sort().values)
        count = len(picks)
        assert 6 <= count < 48 if adaptive.rule == "relevance" else 0 < count < 48
        recycled = tp.Recycle(adaptive, slots=0.25).select(tokens)
        slots = round(0.25 * count)
        assert len(recycled.indices) == count and slots > 0
        stay = picks[: count - slots].sort().values
        assert set(stay.tolist()) <= set(recycled.indices.tolist())
        rows = [recycled.indices.tolist().index(i) for i in stay.tolist()]
        torch.testing.assert_close(recycled.features[rows], tokens.features[stay])
        dropped = torch.ones(48, dtype=torch.bool)
        dropped[stay] = False
        dropped_index = dropped.nonzero().squeeze(1)
        seeds, summaries = summarize(tokens.features[dropped_index], slots)
        summary_rows = [r for r in range(count) if r not in rows]
        assert recycled.indices[summary_rows].tolist() == sorted(dropped_index[seeds].tolist())
        order = dropped_index[seeds].argsort()
        torch.testing.assert_close(recycled.features[summary_rows], summaries[order])


def test_recycle_full_budget_zero_slots_and_errors():
    tokens = tokens_with_attention(6)
    assert torch.equal(tp.Recycle(tp.DivPrune(48)).select(tokens).indices, torch.arange(48))
    assert tp.Recycle(tp.DivPrune(8), slots=0).select(tokens).features is None
    assert tp.Recycle(tp.DivPrune(1), slots=5).slot_count(1) == 0
    assert tp.Recycle(tp.DivPrune(16), slots=0.25).slot_count(16) == 4
    split = SplitByArea(tp.Recycle(tp.DivPrune(10), slots=2))
    views = ViewTokens(features=tokens.features, grid=(48,), views=((4, 4), (4, 8)), text=tokens.text)
    assert len(split.select(views).indices) == 10
    with pytest.raises(TypeError):
        tp.Recycle(tp.FastV(8))
    with pytest.raises(TypeError, match="nothing left"):
        tp.Recycle(tp.Downsample(2))
    with pytest.raises(ValueError, match="slots"):
        tp.Recycle(tp.DivPrune(8), slots=1.5)


def pooled_reference(features, grid, factor):
    """Average pooling by explicit loops over cells; the middle token's index for each cell."""
    frames, height, width = grid if len(grid) == 3 else (1, *grid)
    spots, means = [], []
    for t in range(frames):
        for r0 in range(0, height, factor):
            for c0 in range(0, width, factor):
                rows, cols = range(r0, min(r0 + factor, height)), range(c0, min(c0 + factor, width))
                members = [t * height * width + r * width + c for r in rows for c in cols]
                means.append(features[members].mean(0))
                spots.append(
                    t * height * width + rows[(len(rows) - 1) // 2] * width + cols[(len(cols) - 1) // 2]
                )
    return spots, torch.stack(means)


@pytest.mark.parametrize(
    ("grid", "factor"), [((6, 8), 2), ((5, 7), 2), ((5, 7), 3), ((3, 4, 4), 2), ((24, 24), 4)]
)
def test_downsample_matches_loop_pooling(grid, factor):
    n = math.prod(grid)
    features = torch.randn(n, 8, generator=torch.Generator().manual_seed(n))
    selection = tp.Downsample(factor).select(VisualTokens(features=features, grid=grid))
    spots, means = pooled_reference(features, grid, factor)
    assert selection.indices.tolist() == spots
    torch.testing.assert_close(selection.features, means)
    frames = grid[0] if len(grid) == 3 else 1
    assert len(spots) == frames * math.ceil(grid[-2] / factor) * math.ceil(grid[-1] / factor)
    assert tp.Downsample(factor).count((grid,)) == len(spots)  # what the vLLM processor reserves


def test_downsample_pools_each_view_and_factor_one_is_the_identity():
    features = torch.randn(16 + 32, 4)
    views = ViewTokens(features=features, grid=(48,), views=((4, 4), (4, 8)))
    selection = tp.Downsample(2).select(views)
    base, base_means = pooled_reference(features[:16], (4, 4), 2)
    crops, crop_means = pooled_reference(features[16:], (4, 8), 2)
    assert selection.indices.tolist() == base + [16 + i for i in crops]
    torch.testing.assert_close(selection.features, torch.cat([base_means, crop_means]))
    identity = tp.Downsample(1).select(VisualTokens(features=features, grid=(6, 8)))
    assert torch.equal(identity.indices, torch.arange(48)) and identity.features is None
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="factor"):
            tp.Downsample(bad)
    with pytest.raises(ValueError, match="not both"):
        tp.Downsample(2, budget=0.25)


@pytest.mark.parametrize(
    ("budget", "factor", "kept"), [(64, 3, 64), (0.25, 2, 144), (100, 3, 64), (1.0, 1, 576)]
)
def test_downsample_by_budget_takes_the_finest_pooling_that_fits(budget, factor, kept):
    tokens = VisualTokens(features=torch.randn(576, 4), grid=(24, 24))
    pruner = tp.Downsample(budget=budget)
    assert pruner.factor_for((tokens.grid,)) == factor and pruner.count((tokens.grid,)) == kept
    assert len(pruner.select(tokens).indices) == kept
    assert torch.equal(pruner.select(tokens).indices, tp.Downsample(factor).select(tokens).indices)
    # anyres views share one factor, chosen for their total
    views = ViewTokens(features=torch.randn(16 + 32, 4), grid=(48,), views=((4, 4), (4, 8)))
    assert len(tp.Downsample(budget=12).select(views).indices) == 4 + 8


@pytest.mark.parametrize("rule", ["cover", "mass"])
def test_calibrate_takes_the_largest_target_whose_mean_count_stays_within_the_budget(rule):
    """Against a search over every target at which some image's count changes, run through select."""
    samples = []
    for seed, rank in enumerate((2, 4, 8, 16, 48)):
        tokens = tokens_with_attention(20 + seed)
        generator = torch.Generator().manual_seed(seed)
        low = torch.randn(48, rank, generator=generator) @ torch.randn(rank, 16, generator=generator)
        tokens.features = low + 0.05 * tokens.features
        samples.append(tokens)
    adaptive = tp.Adaptive(tp.CDPruner(30), rule=rule, min_tokens=2)

    def mean_count(target):
        pruner = dataclasses.replace(adaptive, target=target)
        return sum(len(pruner.select(tokens).indices) for tokens in samples) / len(samples)

    targets = set()
    for tokens in samples:
        ranking = tp.CDPruner(30).rank(tokens, 30)
        if rule == "mass":
            targets.update((ranking.gains.double().cumsum(0) / ranking.total).clamp(max=1).tolist())
        else:
            targets.update((1 - ranking.uncovered.double()).tolist())
    targets = sorted(t for t in targets if t > 0)
    for budget in (4, 10, 0.25):
        goal = sum(resolve_budget(budget, 48) for _ in samples) / len(samples)
        chosen = calibrate(adaptive, samples, budget)
        best = max((t for t in targets if mean_count(t) <= goal), default=targets[0])
        assert mean_count(chosen.target) == mean_count(best) <= goal
        counts = [len(chosen.select(tokens).indices) for tokens in samples]
        assert len(set(counts)) > 1 and max(counts) <= 30
    assert calibrate(adaptive, samples, 1).target == targets[0]  # below min_tokens: the smallest target
    with pytest.raises(ValueError, match="iqr"):
        calibrate(tp.Adaptive(tp.FoPru(8), rule="iqr"), samples, 4)
    with pytest.raises(ValueError, match="sample"):
        calibrate(adaptive, [], 4)


def _relevance_numpy(features, text):
    """CDPruner's instruction relevance written out: mean cosine to the instruction's tokens, min-max
    scaled per image."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    words = text / np.linalg.norm(text, axis=1, keepdims=True)
    r = (unit @ words.T).mean(axis=1)
    return (r - r.min()) / (r.max() - r.min() + 1e-6)


@pytest.mark.parametrize(("seed", "target", "least"), [(0, 0.3, 2), (1, 0.6, 5), (2, 0.9, 0.1), (3, 1e-3, 4)])
def test_relevance_rule_keeps_the_relevant_share_of_the_range_in_cdpruner_order(seed, target, least):
    tokens = tokens_with_attention(60 + seed)
    # an instruction close to a few tokens: their relevance stands out
    tokens.text = tokens.features[[3, 17]] + 0.1 * tokens.text[:2]
    pruner = tp.Adaptive(tp.CDPruner(30), rule="relevance", target=target, min_tokens=least)
    relevance = _relevance_numpy(tokens.features.double().numpy(), tokens.text.double().numpy())
    low = resolve_budget(least, 48)
    expected = low + round((30 - low) * float(np.mean(relevance >= 1 - target)))
    kept = pruner.select(tokens).indices
    assert len(kept) == expected
    assert torch.equal(kept, tp.CDPruner(expected).select(tokens).indices)
    assert pruner.select(tokens).indices.tolist() == sorted(kept.tolist())


def test_relevance_rule_gives_broad_instructions_more_tokens_and_needs_relevance():
    tokens = tokens_with_attention(70)
    pruner = tp.Adaptive(tp.CDPruner(40), rule="relevance", target=0.5, min_tokens=4)
    narrow = dataclasses.replace(tokens, text=tokens.features[[5]].clone())
    broad = dataclasses.replace(tokens, text=tokens.features.mean(0, keepdim=True) + 0.01 * tokens.text[:1])
    assert len(pruner.select(narrow).indices) < len(pruner.select(broad).indices) <= 40
    with pytest.raises(ValueError, match="relevance to the instruction"):
        tp.Adaptive(tp.FoPru(8), rule="relevance")
    with pytest.raises(ValueError, match="text embedding"):
        pruner.select(dataclasses.replace(tokens, text=None))


def test_calibrate_relevance_rule_against_every_threshold():
    samples = [tokens_with_attention(80 + seed) for seed in range(5)]
    for seed, tokens in enumerate(samples):
        tokens.text = tokens.features[: 1 + seed] + 0.2 * tokens.text[:1]
    adaptive = tp.Adaptive(tp.CDPruner(30), rule="relevance", min_tokens=3)

    def mean_count(target):
        pruner = dataclasses.replace(adaptive, target=target)
        return sum(len(pruner.select(tokens).indices) for tokens in samples) / len(samples)

    targets = sorted(
        {1 - r for tokens in samples for r in tp.CDPruner(30).relevance(tokens).tolist()} - {0.0}
    )
    for budget in (5, 12, 0.3):
        goal = sum(resolve_budget(budget, 48) for _ in samples) / len(samples)
        chosen = calibrate(adaptive, samples, budget)
        best = max((t for t in targets if mean_count(t) <= goal), default=targets[0])
        assert mean_count(chosen.target) == mean_count(best) <= goal


@pytest.mark.parametrize(
    ("rule", "target"), [("cover", 0.9), ("cover", 0.999), ("mass", 0.6), ("mass", 0.95)]
)
def test_cdpruner_ranking_stops_where_the_rule_is_met_with_the_same_count(rule, target):
    for seed in range(4):
        tokens = tokens_with_attention(40 + seed)
        low = torch.randn(48, 3 + 4 * seed, generator=torch.Generator().manual_seed(seed)) @ torch.randn(
            3 + 4 * seed, 16, generator=torch.Generator().manual_seed(seed + 9)
        )
        tokens.features = low + 0.1 * tokens.features
        full = tp.CDPruner(1.0).rank(tokens, 40)
        early = tp.CDPruner(1.0).rank(tokens, 40, until=(rule, target))
        count = (mass_count if rule == "mass" else cover_count)(full, target)
        assert len(early.order) == count
        assert torch.equal(early.order, full.order[:count]) and torch.equal(early.gains, full.gains[:count])
        adaptive = tp.Adaptive(tp.CDPruner(40), rule=rule, target=target)
        assert adaptive.select(tokens).indices.tolist() == sorted(full.order[:count].tolist())
