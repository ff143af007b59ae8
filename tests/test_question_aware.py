"""CDPruner and DART against straightforward implementations of the papers' algorithms."""

from __future__ import annotations

import itertools

import pytest
import torch

import tokenprune as tp
from tiny_models import IMAGE_TOKEN, llava_inputs, tiny_llava
from tokenprune.pruners.base import Selection, VisualTokens
from tokenprune.pruners.cdpruner import conditional_dpp_greedy, instruction_relevance
from tokenprune.pruners.dart import split_evenly


def reference_relevance(features, text, negate, two_sided=False):
    """CDPruner's relevance as its code computes it, in float64; two-sided: the distance from the
    lower median of the similarities, scaled the same way."""
    v = features.double() / features.double().norm(dim=-1, keepdim=True)
    t = text.double() / text.double().norm(dim=-1, keepdim=True)
    r = (v @ t.T).mean(-1) * (-1 if negate else 1)
    if two_sided:
        r = (r - r.sort().values[(len(r) - 1) // 2]).abs()
    return (r - r.min()) / (r.max() - r.min() + 1e-6)


def reference_kernel(features, quality):
    unit = features.double() / features.double().norm(dim=-1, keepdim=True)
    q = quality.double()
    return q[:, None] * (unit @ unit.T) * q[None, :]


def naive_greedy(kernel, k):
    """Greedy MAP by recomputing log det(L_{S+j}) for every candidate j at every step."""
    picks: list[int] = []
    for _ in range(k):
        best, best_value = None, -float("inf")
        for j in range(len(kernel)):
            if j in picks:
                continue
            subset = picks + [j]
            sign, value = torch.linalg.slogdet(kernel[subset][:, subset])
            value = value if sign > 0 else -float("inf")
            if value > best_value:
                best, best_value = j, value
        picks.append(best)
    return picks


@pytest.mark.parametrize(
    ("seed", "theta", "negate", "two_sided"),
    [
        (0, 0.5, False, False),
        (1, 0.5, True, False),
        (2, 1.0, False, False),
        (3, 0.8, True, False),
        (4, 0.8, False, True),
        (5, 1.0, False, True),
    ],
)
def test_cdpruner_matches_naive_greedy_log_det(seed, theta, negate, two_sided):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(40, 48, generator=generator)
    text = torch.randn(6, 48, generator=generator)
    tokens = VisualTokens(features=features, grid=(5, 8), text=text)
    pruner = tp.CDPruner(12, theta=theta, negate_relevance=negate, two_sided=two_sided)
    relevance = reference_relevance(features, text, negate, two_sided)
    torch.testing.assert_close(
        instruction_relevance(features, text, negate, two_sided).double(), relevance, atol=1e-6, rtol=0
    )
    quality = relevance if theta == 1.0 else torch.exp(theta / (2 * (1 - theta)) * relevance)
    expected = naive_greedy(reference_kernel(features, quality), 12)
    assert pruner.rank(tokens, 12).order.tolist() == expected
    assert pruner.select(tokens).indices.tolist() == sorted(expected)


def test_two_sided_relevance_ranks_tokens_singled_out_by_low_similarity_first():
    """An instruction that is least like a few tokens makes them the most relevant, as the most alike
    would be; one-sided relevance ranks them last."""
    text = torch.tensor([[1.0, 0.0, 0.0]])
    features = torch.tensor([[0.2, 1.0, 0.0]] * 6 + [[-1.0, 0.1, 0.0], [-1.0, 0.0, 0.1]])
    tokens = VisualTokens(features=features, grid=(2, 4), text=text)
    two_sided = tp.CDPruner(2, theta=1.0, two_sided=True)
    assert two_sided.relevance(tokens)[6:].min() > two_sided.relevance(tokens)[:6].max()
    assert tp.CDPruner(2).relevance(tokens)[6:].max() < tp.CDPruner(2).relevance(tokens)[:6].min()
    assert two_sided.select(tokens).indices.tolist() == [6, 7]
    with pytest.raises(ValueError, match="no sign to negate"):
        tp.CDPruner(2, two_sided=True, negate_relevance=True)


def test_cdpruner_gains_are_the_residual_trace_the_picks_remove():
    """total - sum(gains[:t]) == trace(L - L[:, S] L_S^-1 L[S, :]) for the first t picks."""
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(30, 40, generator=generator, dtype=torch.float64)
    quality = torch.rand(30, generator=generator, dtype=torch.float64) + 0.5
    unit = features / features.norm(dim=-1, keepdim=True)
    ranking = conditional_dpp_greedy(unit, quality, 10)
    kernel = reference_kernel(features, quality)
    assert ranking.total == pytest.approx(float(kernel.trace()), rel=1e-5)
    for t in (1, 4, 10):
        s = ranking.order[:t]
        residual = kernel - kernel[:, s] @ torch.linalg.solve(kernel[s][:, s], kernel[s, :])
        remaining = ranking.total - float(ranking.gains[:t].sum())
        assert remaining == pytest.approx(float(residual.trace()), rel=1e-4)
    assert (ranking.gains[1:] >= 0).all()


def test_cdpruner_greedy_is_near_the_brute_force_optimum_and_sees_the_instruction():
    """On 10 tokens the greedy subset of 3 reaches at least 80 % of the best log det found by trying
    every subset, and a question about some tokens moves the picks towards them."""
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(10, 12, generator=generator)
    text = torch.randn(3, 12, generator=generator)
    relevance = reference_relevance(features, text, False)
    kernel = reference_kernel(features, torch.exp(0.5 * relevance))
    best = max(
        torch.linalg.slogdet(kernel[list(s)][:, list(s)])[1] for s in itertools.combinations(range(10), 3)
    )
    picked = tp.CDPruner(3).select(VisualTokens(features=features, grid=(2, 5), text=text)).indices
    greedy = torch.linalg.slogdet(kernel[picked][:, picked])[1]
    assert greedy >= best - 0.2 * abs(best)
    # an instruction that is token 7 itself: at a strong relevance weight it is the first pick
    question = VisualTokens(features=features, grid=(2, 5), text=features[[7]])
    assert int(tp.CDPruner(3, theta=0.9).rank(question, 3).order[0]) == 7
    assert int(tp.CDPruner(3, theta=0.9).rank(question, 3).order[0]) != int(
        tp.CDPruner(3, theta=0.9)
        .rank(VisualTokens(features=features, grid=(2, 5), text=features[[2]]), 3)
        .order[0]
    )


def test_cdpruner_budgets_duplicates_and_errors():
    features = torch.randn(20, 8).repeat(2, 1)  # every token twice; rank 8
    tokens = VisualTokens(features=features, grid=(5, 8), text=torch.randn(4, 8))
    for k in (1, 5, 8, 13, 39):
        kept = tp.CDPruner(k).select(tokens).indices
        assert len(kept) == k == len(set(kept.tolist())) and kept.tolist() == sorted(kept.tolist())
    kept = tp.CDPruner(8).select(tokens).indices
    assert len({int(i) % 20 for i in kept}) == 8  # no duplicate pair while the rank lasts
    assert torch.equal(
        tp.CDPruner(40).select(VisualTokens(features=features, grid=(5, 8))).indices, torch.arange(40)
    )
    with pytest.raises(ValueError, match="text"):
        tp.CDPruner(4).select(VisualTokens(features=features, grid=(5, 8)))
    with pytest.raises(ValueError, match="theta"):
        tp.CDPruner(4, theta=0.0)


def official_dart(states, keys, start, length, pivots, text_pivots, max_kept):
    """DART's selector as published (one image at [start, start + length), text after it), with the
    pivot set iterated in sorted order instead of Python set order."""
    topk = max_kept // (pivots + text_pivots)
    image_norms = keys[start : start + length].abs().sum(-1)
    query_norms = keys[start + length :].abs().sum(-1)
    image_indices = (image_norms.topk(pivots).indices + start).tolist()
    query_indices = (query_norms.topk(text_pivots).indices + start + length).tolist()
    kept = set(image_indices + query_indices)
    valid = sorted(set(range(start, start + length)) - set(image_indices))
    for item in sorted(kept):
        vectors = states[valid]
        similarity = -torch.nn.functional.cosine_similarity(states[item][None], vectors, dim=-1)
        chosen = [valid[i] for i in similarity.topk(topk).indices.tolist()]
        kept.update(chosen)
        valid = sorted(set(valid) - set(chosen))
    kept.difference_update(query_indices)
    return sorted(i - start for i in kept)


@pytest.mark.parametrize(("seed", "budget", "max_kept"), [(0, 20, 16), (1, 36, 32), (2, 4 + 8 * 5, 40)])
def test_dart_matches_the_official_selector_when_the_budget_divides(seed, budget, max_kept):
    generator = torch.Generator().manual_seed(seed)
    start, length, total = 3, 64, 80
    states = torch.randn(total, 24, generator=generator)
    keys = torch.randn(total, 16, generator=generator)
    expected = official_dart(states, keys, start, length, 4, 4, max_kept)
    assert len(expected) == budget
    image, text = torch.arange(start, start + length), torch.arange(start + length, total)
    kept = tp.DART(budget).select_group(states, keys.abs().sum(-1), image, text, budget)
    assert kept.tolist() == expected


def test_dart_budgets_are_exact_and_pivot_duplicates_go_first():
    generator = torch.Generator().manual_seed(7)
    states = torch.randn(50, 16, generator=generator)
    norms = torch.rand(50, generator=generator)
    norms[10] = 10.0  # the only image pivot
    states[11] = states[10] + 1e-3 * torch.randn(16, generator=generator)  # its near-duplicate
    image, text = torch.arange(0, 40), torch.arange(40, 50)
    for budget in (1, 2, 7, 13, 39):
        kept = tp.DART(budget, pivots=1, text_pivots=2).select_group(states, norms, image, text, budget)
        assert len(kept) == budget == len(set(kept.tolist())) and 10 in kept.tolist()
        if budget < 39:
            assert 11 not in kept.tolist()
    kept = tp.DART(5, pivots=0, text_pivots=0 + 1).select_group(states, norms, image, torch.arange(0), 5)
    assert kept.tolist() == norms[:40].topk(5).indices.sort().values.tolist()  # no pivot at all: key norms
    assert split_evenly(10, 4) == [3, 3, 2, 2]
    with pytest.raises(ValueError, match="pivot"):
        tp.DART(4, pivots=0, text_pivots=0)


class InstructionSpy(tp.PreLLMPruner):
    """Keeps everything and records the instruction each image was given."""

    needs = frozenset({"text"})

    def __init__(self):
        super().__init__(1.0)
        self.seen = []

    def select(self, tokens):
        self.seen.append(tokens.text)
        return Selection(torch.arange(len(tokens)))


def test_adapters_give_the_instruction_after_the_image_without_padding():
    model = tiny_llava()
    # sample 0: 5 text tokens before its image, 7 after; sample 1 (left-padded): 2 and 3; sample 2:
    # the image ends the prompt, so its instruction is the text before it
    inputs = llava_inputs(model, [(5, 7), (2, 3), (4, 0)], seed=2)
    spy = InstructionSpy()
    with tp.apply(model, spy), torch.no_grad():
        model(**inputs)
    embed = model.get_input_embeddings()
    for b, (seen, after) in enumerate(zip(spy.seen, (7, 3, 0))):
        real = inputs["input_ids"][b][inputs["attention_mask"][b].bool()]
        text = real[real != IMAGE_TOKEN]
        expected = embed(text[-after:] if after else text)
        assert torch.equal(seen, expected)
