"""LLaVA adapter: equivalence at full budget, exact budgets, decode consistency, positions,
recomputed attention vs eager attention, hook hygiene."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import tokenprune as tp
from tiny_models import IMAGE_TOKEN, llava_inputs, tiny_llava
from tokenprune.adapters.transformers.decoder import DecoderStack, RecomputedRows
from tokenprune.attention import head_mean_probabilities
from tokenprune.pruners.base import LayerPruner

TOKENS = 36  # 84 px / 14 px patches -> 6 x 6 grid


@pytest.fixture(scope="module")
def model():
    return tiny_llava()


@pytest.fixture(scope="module")
def batch1(model):
    return llava_inputs(model, [(5, 7)])


@pytest.fixture(scope="module")
def batch2(model):
    return llava_inputs(model, [(5, 7), (2, 3)], seed=1)


def pruners(budget, layers=(1, 3)):
    return {
        "divprune": tp.DivPrune(budget),
        "visionzip": tp.VisionZip(budget),
        "fopru-rank": tp.FoPru(budget),
        "fopru-row": tp.FoPru(budget, strategy="row"),
        "random": tp.RandomPrune(budget),
        "uniform": tp.UniformPrune(budget),
        "fastv": tp.FastV(budget),
        "feather": tp.Feather(budget, layers_at=layers),
        "divprune+fastv": tp.compose(tp.DivPrune(budget), tp.FastV(budget)),
    }


FULL = list(pruners(TOKENS))


def run_forward(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def run_generate(model, inputs, n=6):
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=n, do_sample=False)


def greedy_without_cache(model, inputs, n=6):
    """Greedy decoding that re-runs the whole (pruned) prompt every step, with generate's positions."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    for _ in range(n):
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        with torch.no_grad():
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                pixel_values=inputs["pixel_values"],
                position_ids=positions,
                use_cache=False,
            ).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids


@pytest.mark.parametrize("name", FULL)
@pytest.mark.parametrize("batch", ["batch1", "batch2"])
def test_full_budget_equals_unpruned(model, name, batch, request):
    inputs = request.getfixturevalue(batch)
    reference_logits, reference_tokens = run_forward(model, inputs), run_generate(model, inputs)
    with tp.apply(model, pruners(TOKENS)[name]) as run:
        logits, tokens = run_forward(model, inputs), run_generate(model, inputs)
    torch.testing.assert_close(logits, reference_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(tokens, reference_tokens)
    assert all(r.tokens_after == r.tokens_before == TOKENS for r in run.stats)


@pytest.mark.parametrize("name", FULL)
@pytest.mark.parametrize("budget", [8, 0.25])
def test_pruned_budgets_are_exact_through_forward_and_generate(model, batch2, name, budget):
    pruner = pruners(budget)[name]
    kept = tp.budget.resolve_budget(budget, TOKENS)
    with tp.apply(model, pruner) as run:
        logits = run_forward(model, batch2)
        tokens = run_generate(model, batch2)
    assert logits.shape[1] == batch2["input_ids"].shape[1] - (TOKENS - kept)
    assert tokens.shape == (2, batch2["input_ids"].shape[1] + 6)
    final = [r for r in run.stats if r.stage == run.stats[-1].stage and r.layer == run.stats[-1].layer]
    assert {r.sample for r in final} == {0, 1}
    for record in final:
        assert record.tokens_after == kept == len(record.kept_indices)
        assert list(record.kept_indices) == sorted(set(record.kept_indices))
        assert record.grid == (6, 6) and record.seconds >= 0


class EveryOtherToken(LayerPruner):
    """A deterministic in-LLM pruner: keeps every other image token whatever the attention says."""

    def layers(self):
        return (2,)

    def select_layer(self, ctx):
        return [[torch.arange(0, len(g), 2) for g in groups] for groups in ctx.groups]


@pytest.mark.parametrize("positions", ["keep", "reindex"])
@pytest.mark.parametrize(
    "make",
    [
        lambda p: tp.UniformPrune(9, positions=p),
        lambda p: EveryOtherToken(TOKENS, positions=p),
        lambda p: tp.compose(tp.UniformPrune(20, positions=p), EveryOtherToken(TOKENS, positions=p)),
    ],
    ids=["pre-llm", "in-llm", "both"],
)
def test_cached_generate_equals_recomputing_the_pruned_prompt(model, batch2, make, positions):
    with tp.apply(model, make(positions)):
        cached = run_generate(model, batch2)
        recomputed = greedy_without_cache(model, batch2)
    assert torch.equal(cached, recomputed)


def test_padded_batch_matches_each_sample_alone(model, batch2):
    pruner = tp.compose(tp.DivPrune(12), tp.FastV(6))
    with tp.apply(model, pruner):
        together = run_generate(model, batch2)
        for b in range(2):
            real = batch2["attention_mask"][b].bool()
            alone = {
                "input_ids": batch2["input_ids"][b : b + 1, real],
                "attention_mask": batch2["attention_mask"][b : b + 1, real],
                "pixel_values": batch2["pixel_values"][b : b + 1],
            }
            assert torch.equal(run_generate(model, alone)[0, -6:], together[b, -6:])


def language_model_positions(model, call):
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda m, a, k: seen.append(k.get("position_ids")), with_kwargs=True
    )
    try:
        call()
    finally:
        hook.remove()
    return seen


def test_keep_positions_are_original_and_decoding_continues_after_unpruned_length(model, batch1):
    length = batch1["input_ids"].shape[1]
    with tp.apply(model, tp.UniformPrune(9)) as run:
        seen = language_model_positions(model, lambda: run_generate(model, batch1, n=3))
    image_start = int((batch1["input_ids"][0] == IMAGE_TOKEN).nonzero()[0])
    kept = [image_start + i for i in run.stats[0].kept_indices]
    text = [i for i in range(length) if batch1["input_ids"][0, i] != IMAGE_TOKEN]
    assert seen[0][0].tolist() == sorted(text + kept)
    assert [int(p[0, -1]) for p in seen[1:]] == [length, length + 1]


def test_reindex_positions_are_contiguous(model, batch1):
    length = batch1["input_ids"].shape[1]
    with tp.apply(model, tp.UniformPrune(9, positions="reindex")):
        seen = language_model_positions(model, lambda: run_generate(model, batch1, n=3))
    pruned = length - (TOKENS - 9)
    assert seen[0][0].tolist() == list(range(pruned))
    assert [int(p[0, -1]) for p in seen[1:]] == [pruned, pruned + 1]


def test_kv_cache_holds_what_each_layer_kept(model, batch1):
    length = batch1["input_ids"].shape[1]
    with tp.apply(model, tp.compose(tp.DivPrune(20), tp.FastV(8))), torch.no_grad():
        cache = model(**batch1, use_cache=True).past_key_values
    lengths = [layer.keys.shape[-2] for layer in cache.layers]
    assert lengths == [length - 16] * 2 + [length - 28] * 2  # FastV acts from layer 2 of 4


def test_vision_cls_attention_matches_eager(model, batch2):
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        weights = eager.model.vision_tower(batch2["pixel_values"], output_attentions=True).attentions
    expected = weights[-2][:, :, 0, 1:].sum(1)  # layer producing hidden_states[-2]
    seen = {}
    original = tp.FoPru.select

    def spy(self, tokens):
        seen.setdefault("attention", []).append(tokens.attention)
        return original(self, tokens)

    with tp.apply(model, tp.FoPru(8)), pytest.MonkeyPatch.context() as patch:
        patch.setattr(tp.FoPru, "select", spy)
        run_forward(model, batch2)
    torch.testing.assert_close(torch.stack(seen["attention"]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_recomputed_last_token_attention_matches_eager(model, batch2, layer):
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    lm = model.model.language_model
    with torch.no_grad():
        embeds = model.model.get_input_embeddings()(batch2["input_ids"])
        mask = batch2["attention_mask"]
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        weights = eager.model.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, output_attentions=True
        ).attentions[layer]
        captured = {}
        hook = lm.layers[layer].register_forward_pre_hook(
            lambda m, a, k: captured.update(hidden=a[0], pos=k["position_embeddings"]), with_kwargs=True
        )
        lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
        hook.remove()
        rows = RecomputedRows(DecoderStack(lm), layer, captured["hidden"], captured["pos"], mask.bool())
        ours = torch.softmax(rows.logits(window=1, rope=True), dim=-1)
    torch.testing.assert_close(ours[:, :, 0], weights[:, :, -1].float(), rtol=1e-4, atol=1e-6)
    assert head_mean_probabilities(rows.logits(window=2)).shape == mask.shape


def test_prompt_without_image_passes_through(model):
    ids = torch.randint(3, IMAGE_TOKEN, (1, 12))
    reference = run_forward(model, {"input_ids": ids})
    with tp.apply(model, tp.compose(tp.DivPrune(4), tp.FastV(4))) as run:
        logits = run_forward(model, {"input_ids": ids})
    assert torch.equal(logits, reference)
    assert len(run.stats) == 0


def hook_count(model):
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def test_hooks_are_removed_after_exception_and_remove(model, batch1):
    before = hook_count(model)
    reference = run_forward(model, batch1)
    with pytest.raises(RuntimeError, match="boom"), tp.apply(model, tp.compose(tp.DivPrune(4), tp.FastV(4))):
        assert hook_count(model) > before
        raise RuntimeError("boom")
    assert hook_count(model) == before
    handle = tp.apply(model, tp.VisionZip(4))
    handle.remove()
    handle.remove()  # idempotent
    assert hook_count(model) == before
    assert torch.equal(run_forward(model, batch1), reference)


def test_second_pruner_on_a_pruned_model_is_refused(model):
    with tp.apply(model, tp.DivPrune(4)), pytest.raises(RuntimeError, match="compose"):
        tp.apply(model, tp.FastV(4))


@pytest.mark.parametrize("pruner", [tp.FastV(4, layer=4), tp.Feather(4), tp.FastV(4, layer=0)])
def test_layers_out_of_range_are_refused(model, pruner):
    with pytest.raises(ValueError, match="layers"):
        tp.apply(model, pruner)


def test_wrong_image_token_count_raises_clear_error(model, batch1):
    broken = dict(
        batch1,
        input_ids=batch1["input_ids"][:, :-20].clone(),
        attention_mask=batch1["attention_mask"][:, :-20],
    )
    broken["input_ids"][0, -1] = IMAGE_TOKEN
    with tp.apply(model, tp.DivPrune(4)), pytest.raises(ValueError, match="image tokens"):
        run_forward(model, broken)


def test_fraction_budget_resolves_per_image(model, batch2):
    with tp.apply(model, tp.DivPrune(0.5)) as run:
        run_forward(model, batch2)
    assert [r.tokens_after for r in run.stats] == [math.ceil(TOKENS / 2)] * 2
