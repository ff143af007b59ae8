"""In-tower pruning: the algorithms against independent references (Weighted PageRank, head fusion,
bipartite matching, proportional attention) and the CLIP tower of LLaVA-1.5 against the unpruned
tower (full budget, masking reference, batches, exact budgets, errors)."""

from __future__ import annotations

import copy

import pytest
import torch

import tokenprune as tp
from tiny_models import llava_inputs, tiny_llava
from tokenprune.adapters.transformers.tower import block_attention, clip_mean_keys, clip_queries_keys
from tokenprune.pruners.base import TowerTokens
from tokenprune.pruners.tower import bipartite_soft_matching, fuse_heads, merge_tokens, weighted_pagerank

TOKENS = 36  # 6 x 6 patches behind [CLS] in the tiny LLaVA tower


def random_attention(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(*shape, generator=generator) * 3, dim=-1)


# -- algorithms -------------------------------------------------------------------------------------


def test_weighted_pagerank_conserves_mass_and_converges_to_the_perron_vector():
    attention = random_attention(2, 3, 10, 10)
    one = weighted_pagerank(attention, 1)
    torch.testing.assert_close(one.sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(one, attention.mean(-2))  # one step from uniform: mean attention received
    converged = weighted_pagerank(attention, 200)
    values, vectors = torch.linalg.eig(attention[0, 0].double().T)
    perron = vectors[:, values.real.argmax()].real
    torch.testing.assert_close(converged[0, 0].double(), perron / perron.sum(), rtol=1e-4, atol=1e-6)


def test_weighted_pagerank_keeps_mass_per_window_of_a_block_diagonal_graph():
    blocks = random_attention(2, 4, 4)
    attention = torch.block_diag(blocks[0], blocks[1])[None, None]
    scores = weighted_pagerank(attention, 7)[0, 0]
    torch.testing.assert_close(scores[:4].sum(), torch.tensor(0.5))


def test_head_fusion_is_the_rms_over_heads_of_informative_variance():
    n = 4
    flat = torch.full((n,), 1 / n)  # variance 0: uninformative
    peaked = torch.tensor([0.7, 0.1, 0.1, 0.1])  # scaled variance 1.08: too peaked
    moderate = torch.tensor([0.35, 0.25, 0.2, 0.2])  # scaled variance 0.0366
    other = torch.tensor([0.2, 0.2, 0.3, 0.3])  # scaled variance 0.04
    scores = torch.stack([flat, peaked, moderate, other])[None]
    expected = ((moderate**2 + other**2) / 2).sqrt()
    torch.testing.assert_close(fuse_heads(scores)[0], expected)
    # no informative head: every head counts
    torch.testing.assert_close(fuse_heads(scores[:, :2])[0], ((flat**2 + peaked**2) / 2).sqrt())


def naive_matching(keys, merges, protected):
    """ToMe's matching written as loops over the tokens of one image."""
    n = len(keys)
    unit = torch.nn.functional.normalize(keys, dim=-1)
    side_a, side_b = list(range(protected, n, 2)), list(range(protected + 1, n, 2))
    edges = []
    for a in side_a:
        similarities = [float(unit[a] @ unit[b]) for b in side_b]
        best = max(range(len(side_b)), key=lambda i: (similarities[i], -i))
        edges.append((similarities[best], a, side_b[best]))
    edges.sort(key=lambda e: -e[0])
    merged = {a: b for _, a, b in edges[:merges]}
    kept = [i for i in range(n) if i not in merged]
    return kept, [kept.index(merged.get(i, i)) for i in range(n)]


@pytest.mark.parametrize(("n", "merges", "protected"), [(9, 3, 1), (12, 6, 0), (7, 0, 1), (16, 8, 0)])
def test_bipartite_matching_equals_the_naive_loop(n, merges, protected):
    keys = torch.randn(3, n, 5, generator=torch.Generator().manual_seed(n))
    step = bipartite_soft_matching(keys, merges, protected)
    for b in range(3):
        kept, into = naive_matching(keys[b], merges, protected)
        assert step.kept[b].tolist() == kept
        assert step.into[b].tolist() == into


def test_merging_conserves_sizes_and_averages_by_size():
    hidden = torch.randn(2, 9, 4)
    sizes = torch.tensor([[1.0, 2, 1, 3, 1, 1, 2, 1, 1]] * 2)
    step = bipartite_soft_matching(torch.randn(2, 9, 3), 4, protected=1)
    merged, new_sizes = merge_tokens(hidden, sizes, step)
    torch.testing.assert_close(new_sizes.sum(1), sizes.sum(1))
    for b in range(2):
        for slot in range(step.kept.shape[1]):
            members = (step.into[b] == slot).nonzero().squeeze(1)
            weights = sizes[b, members]
            expected = (hidden[b, members] * weights[:, None]).sum(0) / weights.sum()
            torch.testing.assert_close(merged[b, slot], expected)


def test_zerotprune_drops_exactly_and_never_the_protected_tokens():
    attention = random_attention(2, 4, 13, 13)
    tokens = TowerTokens(1, 8, torch.randn(2, 13, 6), torch.ones(2, 13), protected=1, attention=attention)
    for keep in (12, 7, 1):
        step = tp.ZeroTPrune(keep, similar=0.5).step(tokens, keep)
        assert step.kept.shape == (2, keep + 1) and bool((step.kept[:, 0] == 0).all())
        assert bool((step.kept.diff(dim=1) > 0).all())
        assert int((step.into >= 0).sum()) == 2 * (keep + 1)  # drops only: nothing merges


def test_zerotprune_similarity_stage_drops_a_duplicate_of_an_important_token():
    """With `similar` = 1 every drop comes from the similarity stage: the less important copy of a
    pair of identical keys goes first."""
    keys = torch.randn(1, 9, 8, generator=torch.Generator().manual_seed(3))
    keys[0, 5] = keys[0, 2]
    logits = torch.zeros(1, 1, 9, 9)
    logits[..., 2], logits[..., 5] = 3.0, -3.0  # everyone attends to token 2, no one to its copy
    tokens = TowerTokens(1, 8, keys, torch.ones(1, 9), attention=torch.softmax(logits, -1))
    step = tp.ZeroTPrune(8, similar=1.0).step(tokens, 8)
    assert 5 not in step.kept[0].tolist() and 2 in step.kept[0].tolist()


def test_schedules_end_at_the_budget_and_tome_refuses_unreachable_ones():
    assert tp.ZeroTPrune(0.25, layers=(2, 5, 8)).schedule(576, 23) == ((2, 363), (5, 229), (8, 144))
    assert tp.ToMe(16, layers=(0, 1, 2)).schedule(36, 3) == ((0, 29), (1, 22), (2, 16))
    assert dict(tp.ToMe(58).schedule(576, 23))[22] == 58
    decreasing = tp.ToMe(16, layers=(0, 1, 2, 3), inflect=-0.5).schedule(36, 4)
    # merges from 1.5 r down to 0.5 r (r = 5): shares 7.5, 5.8, 4.2, 2.5 -> 8, 6, 4, 2
    assert decreasing == ((0, 28), (1, 22), (2, 18), (3, 16))
    with pytest.raises(ValueError, match="at most half"):
        tp.ToMe(8).schedule(36, 2)
    with pytest.raises(ValueError, match="inflect"):
        tp.ToMe(8, inflect=1.5)
    with pytest.raises(ValueError, match="layers must lie in"):
        tp.ZeroTPrune(8, layers=(0, 2)).schedule(36, 2)
    with pytest.raises(ValueError, match="strictly increasing"):
        tp.ToMe(8, layers=(1, 1)).schedule(36, 3)


def test_proportional_attention_makes_a_merged_duplicate_invisible_to_other_queries(model):
    """A token duplicated and merged back into one of size 2 (attention bias log 2) leaves every other
    token's block output unchanged: the HF block with SDPA, fed the engine's additive mask."""
    block = tower_blocks(model)[0]
    hidden = torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(0))
    doubled = torch.cat([hidden, hidden[:, 3:4]], dim=1)
    step = bipartite_soft_matching(torch.cat([torch.randn(1, 6, 4), torch.zeros(1, 1, 4)], 1), 0)
    step.into[0, 6] = 3  # merge the copy into its original
    step.kept = step.kept[:, :6]
    merged, sizes = merge_tokens(doubled, torch.ones(1, 7), step)
    assert sizes.tolist() == [[1, 1, 1, 2, 1, 1]]
    with torch.no_grad():
        reference = block(doubled, None)
        proportional = block(merged, sizes.log()[:, None, None, :])
    torch.testing.assert_close(proportional, reference[:, :6], rtol=0, atol=1e-5)


# -- LLaVA-1.5's CLIP tower ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return tiny_llava()


@pytest.fixture(scope="module")
def batch2(model):
    return llava_inputs(model, [(5, 7), (2, 3)], seed=1)


def image_features(model, pixel_values):
    config = model.config
    with torch.no_grad():
        output = model.model.get_image_features(
            pixel_values=pixel_values,
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
        )
    features = output.pooler_output if hasattr(output, "pooler_output") else output
    return torch.stack(list(features))


def tower_blocks(model):
    tower = model.model.vision_tower
    return getattr(tower, "vision_model", tower).encoder.layers


def test_head_averaged_keys_equal_the_mean_of_the_blocks_keys(model):
    """The folded projection against the block's own per-head keys, with a nonzero key bias."""
    block = copy.deepcopy(tower_blocks(model)[0])
    with torch.no_grad():
        block.self_attn.k_proj.bias.normal_(generator=torch.Generator().manual_seed(1))
        hidden = torch.randn(2, 7, block.self_attn.embed_dim, generator=torch.Generator().manual_seed(2))
        _, keys, _ = clip_queries_keys(block, hidden)
        torch.testing.assert_close(clip_mean_keys(block, hidden), keys.mean(dim=1))


def test_block_attention_equals_the_softmax_of_scaled_logits_plus_bias():
    generator = torch.Generator().manual_seed(4)
    # 2 x 3 x 50 rows: more than one block of SOFTMAX_ROWS
    queries, keys = torch.randn(2, 2, 3, 50, 5, generator=generator).unbind(0)
    bias = torch.rand(2, 50, generator=generator).log()
    for key_bias in (None, bias):
        logits = queries @ keys.transpose(-1, -2) * 0.4
        expected = torch.softmax(logits if key_bias is None else logits + key_bias[:, None, None], dim=-1)
        torch.testing.assert_close(block_attention(queries, keys, 0.4, key_bias), expected)


def masked_reference(model, pixel_values, dropped_from: dict[int, torch.Tensor], features=None, protected=1):
    """The unpruned tower with the dropped patches masked out as keys (-inf) from the block that
    drops them on; dropped_from[block]: (images, patches) bool, cumulative, behind `protected`
    leading tokens. features(model, pixel_values): what to return (default: image_features)."""
    hooks, masks = [], {}
    current = None
    for index in range(len(tower_blocks(model))):
        if index in dropped_from:
            current = dropped_from[index]
        if current is not None:
            bias = torch.zeros(len(current), protected + current.shape[1])
            bias[:, protected:] = bias[:, protected:].masked_fill(current, float("-inf"))
            masks[index] = bias[:, None, None, :]

    def hook_for(index):
        def hook(module, args, kwargs):
            return (args[0], masks[index]), kwargs

        return hook

    for index in masks:
        hooks.append(tower_blocks(model)[index].register_forward_pre_hook(hook_for(index), with_kwargs=True))
    try:
        return (features or image_features)(model, pixel_values)
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize("pruner", [tp.ZeroTPrune(1.0), tp.ToMe(1.0), tp.ToMe(TOKENS, layers=(1,))])
def test_full_budget_tower_output_equals_unpruned(model, batch2, pruner):
    reference = image_features(model, batch2["pixel_values"])
    with tp.apply(model, pruner):
        features = image_features(model, batch2["pixel_values"])
    torch.testing.assert_close(features, reference, rtol=0, atol=0)


@pytest.mark.parametrize("budget", [20, 9, 0.5])
def test_dropped_tokens_equal_masking_them_out_as_keys(model, batch2, budget):
    pixel_values = batch2["pixel_values"]
    with tp.apply(model, tp.ZeroTPrune(budget, layers=(0, 1))) as run:
        features = image_features(model, pixel_values)
        model(**batch2)  # records come with the forward that reads the features
    records = run.stats.for_stage("in_tower")
    dropped = {}
    for layer in (0, 1):
        kept = [r.kept_indices for r in records if r.layer == layer]
        mask = torch.ones(len(kept), TOKENS, dtype=torch.bool)
        for i, indices in enumerate(kept):
            mask[i, list(indices)] = False
        dropped[layer] = mask
    reference = masked_reference(model, pixel_values, dropped)
    final = [list(r.kept_indices) for r in records if r.layer == 1]
    expected = torch.stack([reference[i, kept] for i, kept in enumerate(final)])
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pruner", [tp.ZeroTPrune(9), tp.ToMe(18)])
def test_each_image_of_a_batch_is_pruned_as_alone(model, batch2, pruner):
    pixel_values = batch2["pixel_values"]
    with tp.apply(model, pruner):
        together = image_features(model, pixel_values)
        alone = torch.cat([image_features(model, pixel_values[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("pruner", "tower_counts", "final"),
    [
        (tp.compose(tp.ToMe(18), tp.DivPrune(6)), [(36, 27), (27, 18)], 6),
        (tp.compose(tp.ZeroTPrune(0.5, layers=(1,)), tp.VisionZip(5)), [(36, 18)], 5),
        (tp.ZeroTPrune(0.25), [(36, 18), (18, 9)], None),
    ],
)
def test_composed_budgets_are_exact_per_tower_step_and_stage(model, batch2, pruner, tower_counts, final):
    with tp.apply(model, pruner) as run, torch.no_grad():
        logits = model(**batch2).logits
    kept_total = tower_counts[-1][1] if final is None else final
    assert logits.shape[1] == batch2["input_ids"].shape[1] - (TOKENS - kept_total)
    for sample in (0, 1):
        tower = [r for r in run.stats.for_stage("in_tower") if r.sample == sample]
        assert [(r.tokens_before, r.tokens_after) for r in tower] == tower_counts
        for earlier, later in zip(tower, tower[1:]):
            assert set(later.kept_indices) <= set(earlier.kept_indices)
        pre = [r for r in run.stats.for_stage("pre_llm") if r.sample == sample]
        if final is not None:
            (record,) = pre
            assert (record.tokens_before, record.tokens_after) == (tower_counts[-1][1], final)
            assert set(record.kept_indices) <= set(tower[-1].kept_indices)


def test_in_tower_stage_errors(model, batch2):
    with pytest.raises(ValueError, match="at most half"):
        tp.apply(model, tp.ToMe(4))
    with pytest.raises(ValueError, match="layers must lie in"):
        tp.apply(model, tp.ZeroTPrune(4, layers=(2,)))
    with pytest.raises(ValueError, match="forward order"):
        tp.compose(tp.DivPrune(4), tp.ToMe(8))
    with tp.apply(model, tp.ZeroTPrune(8)), pytest.raises(ValueError, match="pass pixel_values"):
        features = image_features(model, batch2["pixel_values"][:1])
        model(input_ids=batch2["input_ids"], mm_encoder_outputs={"image": torch.cat([features] * 2)})


# -- Qwen2-VL and Qwen2.5-VL vision transformers ----------------------------------------------------

QWEN_TOWERS = ("qwen2_vl", "qwen2_5_vl")


@pytest.fixture(scope="module")
def qwen_models():
    from qwen_models import tiny_qwen

    return {family: tiny_qwen(family) for family in (*QWEN_TOWERS, "qwen3_vl")}


def qwen_images(family, seed=1):
    """Sample 0: an 8 x 12-patch image (24 merge groups, six 2 x 2-group windows in Qwen2.5-VL);
    sample 1: a 4 x 8-patch image (8 groups)."""
    from qwen_models import qwen_inputs

    return qwen_inputs([[("image", 8, 12)], [("image", 4, 8)]], family, seed=seed)


def qwen_features(model, inputs):
    with torch.no_grad():
        output = model.model.get_image_features(
            inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True
        )
    return list(output.pooler_output)


def dense_qwen_tower(visual, inputs, dropped_from: dict[int, torch.Tensor]):
    """The unpruned tower run block by block with dense attention: each block's own attention
    segments (per image, or per window) as a block-diagonal mask, and the merge groups in
    dropped_from[block] (original indices over all images, cumulative) masked out as keys from that
    block on. Returns the merger's output in original group order."""
    import sys

    seen = []
    hook = visual.blocks[0].register_forward_pre_hook(
        lambda m, a, k: seen.append((a[0] if a else k["hidden_states"], k)), with_kwargs=True
    )
    bounds = []
    hooks = [
        block.register_forward_pre_hook(lambda m, a, k: bounds.append(k["cu_seqlens"]), with_kwargs=True)
        for block in visual.blocks
    ]
    try:
        with torch.no_grad():
            visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    finally:
        hook.remove()
        for h in hooks:
            h.remove()
    hidden, kwargs = seen[0]
    cos, sin = kwargs["position_embeddings"]
    unit = visual.spatial_merge_size**2
    groups = hidden.shape[0] // unit
    if hasattr(visual, "fullatt_block_indexes"):
        from transformers.vision_utils import get_vision_window_index

        order, _ = get_vision_window_index(
            inputs["image_grid_thw"], visual.spatial_merge_size, visual.window_size, visual.patch_size
        )
    else:
        order = torch.arange(groups)
    alive = torch.ones(hidden.shape[0], dtype=torch.bool)
    with torch.no_grad():
        for index, block in enumerate(visual.blocks):
            if index in dropped_from:
                alive = ~dropped_from[index][order].repeat_interleave(unit)
            attention = block.attn
            rotary = sys.modules[type(attention).__module__].apply_rotary_pos_emb_vision
            x = block.norm1(hidden)
            q, k, v = (
                attention.qkv(x).reshape(len(x), 3, attention.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
            )
            q, k = rotary(q, k, cos, sin)
            segment = torch.searchsorted(bounds[index][1:], torch.arange(len(x)), right=True)
            allowed = (segment[:, None] == segment[None, :]) & alive[None, :]
            logits = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * attention.scaling
            # a window whose every key was dropped leaves its (dropped) queries without weights
            weights = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
            out = torch.einsum("hqk,khd->qhd", weights, v.float()).reshape(len(x), -1)
            hidden = hidden + attention.proj(out.to(hidden.dtype))
            hidden = hidden + block.mlp(block.norm2(hidden))
        return visual.merger(hidden)[torch.argsort(order)]


@pytest.mark.parametrize("family", QWEN_TOWERS)
def test_qwen_full_budget_equals_unpruned(qwen_models, family):
    model = qwen_models[family]
    inputs = qwen_images(family)
    with torch.no_grad():
        reference = model(**inputs).logits
    features = qwen_features(model, inputs)
    with tp.apply(model, tp.ZeroTPrune(1.0)) as run, torch.no_grad():
        pruned_features = qwen_features(model, inputs)
        logits = model(**inputs).logits
    for got, expected in zip(pruned_features, features):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(logits, reference, rtol=0, atol=0)
    assert [(r.sample, r.tokens_before, r.tokens_after) for r in run.stats] == [
        (0, 24, 24), (0, 24, 24), (1, 8, 8), (1, 8, 8)
    ]  # fmt: skip


@pytest.mark.parametrize("family", QWEN_TOWERS)
@pytest.mark.parametrize("budget", [0.5, 3])
def test_qwen_kept_groups_equal_a_dense_masked_tower(qwen_models, family, budget):
    """Re-cut cu_seqlens (per image and per window), gathered rotary embeddings and whole dropped
    groups, against a dense run of the unpruned tower with the dropped groups masked as keys."""
    model = qwen_models[family]
    inputs = qwen_images(family)
    with tp.apply(model, tp.ZeroTPrune(budget, layers=(0, 1))) as run, torch.no_grad():
        features = qwen_features(model, inputs)
        model(**inputs)
    offsets = {0: 0, 1: 24}
    dropped = {}
    for layer in (0, 1):
        mask = torch.ones(32, dtype=torch.bool)
        for record in run.stats.for_stage("in_tower"):
            if record.layer == layer:
                mask[[offsets[record.sample] + i for i in record.kept_indices]] = False
        dropped[layer] = mask
    reference = dense_qwen_tower(model.model.visual, inputs, dropped)
    final = {r.sample: list(r.kept_indices) for r in run.stats.for_stage("in_tower") if r.layer == 1}
    for image in (0, 1):
        kept = [offsets[image] + i for i in final[image]]
        torch.testing.assert_close(features[image][final[image]], reference[kept], rtol=1e-4, atol=1e-5)
        assert len(final[image]) == tp.budget.resolve_budget(budget, (24, 8)[image])


@pytest.mark.parametrize("family", QWEN_TOWERS)
def test_qwen_images_of_a_batch_are_pruned_as_alone(qwen_models, family):
    from qwen_models import qwen_inputs

    model = qwen_models[family]
    inputs = qwen_images(family)
    with tp.apply(model, tp.ZeroTPrune(0.5)):
        together = qwen_features(model, inputs)
        for image, (h, w) in enumerate(((8, 12), (4, 8))):
            alone = qwen_inputs([[("image", h, w)]], family, seed=1)
            alone["pixel_values"] = inputs["pixel_values"][(0, 96)[image] : (96, 128)[image]]
            torch.testing.assert_close(qwen_features(model, alone)[0], together[image], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", QWEN_TOWERS)
def test_qwen_cached_generate_equals_recomputing_the_pruned_prompt(qwen_models, family):
    from test_contract import generate, greedy_without_cache

    model = qwen_models[family]
    inputs = qwen_images(family)
    with tp.apply(model, tp.compose(tp.ZeroTPrune(0.5), tp.UniformPrune(3))) as run:
        cached = generate(model, inputs, 3)
        recomputed = greedy_without_cache(model, inputs, family)
    assert torch.equal(cached, recomputed)
    final = [r for r in run.stats.for_stage("pre_llm")][-2:]
    assert [(r.tokens_before, r.tokens_after) for r in final] == [(12, 3), (4, 3)]


def test_qwen_refusals(qwen_models):
    from qwen_models import qwen_inputs

    with pytest.raises(ValueError, match="DeepStack adds the outputs of vision blocks"):
        tp.apply(qwen_models["qwen3_vl"], tp.ZeroTPrune(0.5))
    model = qwen_models["qwen2_5_vl"]
    with pytest.raises(ValueError, match="proportional attention"):
        tp.apply(model, tp.ToMe(0.5))
    with pytest.raises(ValueError, match="already shortened"):
        tp.apply(model, tp.compose(tp.ZeroTPrune(0.5), tp.VisionZip(2)))
    video = qwen_inputs([[("video", 4, 4, 4)]], "qwen2_5_vl", seed=1)
    with tp.apply(model, tp.ZeroTPrune(0.5)), pytest.raises(ValueError, match="supports images"):
        model(**video)


def test_head_fusion_takes_the_variance_over_the_tokens_still_in_the_graph():
    """Tokens already dropped (score 0 in the remaining graph) do not make a head look peaked."""
    living = torch.stack(
        [
            torch.full((4,), 0.25),
            torch.tensor([0.7, 0.1, 0.1, 0.1]),
            torch.tensor([0.35, 0.25, 0.2, 0.2]),
            torch.tensor([0.2, 0.2, 0.3, 0.3]),
        ]
    )
    scores = torch.cat([living, torch.zeros(4, 4)], dim=-1)[None]  # four dropped tokens
    ranked = torch.tensor([[True] * 4 + [False] * 4])
    torch.testing.assert_close(fuse_heads(scores, ranked=ranked)[0, :4], fuse_heads(living[None])[0])


@pytest.mark.parametrize("seed", range(6))
def test_zerotprune_importance_stage_ranks_the_graph_left_by_the_similarity_stage(seed):
    """similar = 0.5 over 2k drops: the k similarity drops (those of similar = 1 over k drops), then
    the k least important tokens of the graph without them, which is that graph pruned by the
    importance stage alone (rows renormalised: the attention those tokens would have among themselves)."""
    n, k, protected = 17, 3, 1
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randn(1, n, 8, generator=generator)
    attention = torch.softmax(torch.randn(1, 4, n, n, generator=generator) * 2, dim=-1)
    tokens = TowerTokens(4, 8, keys, torch.ones(1, n), protected, attention)
    prunable = n - protected
    by_similarity = tp.ZeroTPrune(prunable - k, similar=1.0).step(tokens, prunable - k).kept[0]
    both = tp.ZeroTPrune(prunable - 2 * k, similar=0.5, iterations=5).step(tokens, prunable - 2 * k).kept[0]
    sub = attention[:, :, by_similarity][:, :, :, by_similarity]
    sub = sub / sub.sum(-1, keepdim=True)
    left = TowerTokens(4, 8, keys[:, by_similarity], torch.ones(1, len(by_similarity)), protected, sub)
    alone = tp.ZeroTPrune(prunable - 2 * k, similar=0.0, iterations=5).step(left, prunable - 2 * k).kept[0]
    assert both.tolist() == by_similarity[alone].tolist()
