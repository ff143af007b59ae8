"""LLaVA adapter: positions, KV cache contents, recomputed attention vs eager attention, hook hygiene,
errors. The contract every adapter keeps is in test_contract.py."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import tokenprune as tp
from tiny_models import (
    IMAGE_TOKEN,
    eager_weights_and_recomputed_rows,
    language_model_positions,
    llava_inputs,
    tiny_llava,
)
from tokenprune.attention import head_mean_probabilities

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


def run_forward(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def run_generate(model, inputs, n=6):
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=n, do_sample=False)


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
    mask = batch2["attention_mask"]
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    weights, rows = eager_weights_and_recomputed_rows(model, batch2["input_ids"], mask, positions, layer)
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
