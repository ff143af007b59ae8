"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL adapters: M-RoPE positions at prefill and decode, the video frame
interval, DeepStack, vision and in-LLM attention vs eager, errors. The contract every adapter keeps
is in test_contract.py."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from qwen_models import FAMILIES, IMAGE_TOKEN, VIDEO_TOKEN, qwen_inputs, tiny_qwen, unpruned_positions

import tokenprune as tp
import tokenprune.attention
from tiny_models import eager_weights_and_recomputed_rows, language_model_positions
from tokenprune.adapters.transformers import compat
from tokenprune.pruners.base import LayerPruner
from tokenprune.pruners.views import SplitByArea

# batch 1: one 8 x 12-patch image (4 x 6 = 24 merged tokens); batch 2 adds a sample with a 4 x 4-patch
# image (4 tokens) and a 4-frame 4 x 4-patch video (2 x 2 x 2 = 8 tokens)
PROMPTS = {
    "batch1": [[("image", 8, 12)]],
    "batch2": [[("image", 8, 12)], [("image", 4, 4), ("video", 4, 4, 4)]],
}
STEPS = 3


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


_models: dict = {}


@pytest.fixture(scope="module")
def model(family):
    if family not in _models:
        _models[family] = tiny_qwen(family)
    return _models[family]


def inputs_for(family, batch):
    return qwen_inputs(PROMPTS[batch], family, seed=1)


def run_forward(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def run_generate(model, inputs, n=STEPS):
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=n, do_sample=False)


def test_full_budget_keeps_the_video_frame_interval(model, family):
    """second_per_grid_ts spaces Qwen2.5-VL's temporal positions; the pruned prefill and its decode
    steps must use the same spacing as the model."""
    if family != "qwen2_5_vl":
        pytest.skip("only Qwen2.5-VL takes second_per_grid_ts")
    inputs = {
        **qwen_inputs([[("video", 4, 4, 4)]], family, seed=2),
        "second_per_grid_ts": torch.tensor([3.0]),
    }
    reference_logits, reference_tokens = run_forward(model, inputs), run_generate(model, inputs)
    with tp.apply(model, tp.UniformPrune(1.0)):
        logits, tokens = run_forward(model, inputs), run_generate(model, inputs)
    torch.testing.assert_close(logits, reference_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(tokens, reference_tokens)


class EveryOtherToken(LayerPruner):
    """A deterministic in-LLM pruner: keeps every other visual token whatever the attention says."""

    def layers(self):
        return (1,)

    def select_layer(self, ctx):
        return [[torch.arange(0, len(g), 2) for g in groups] for groups in ctx.groups]


def test_in_llm_reindex_without_pre_llm_pruner_is_refused(model):
    with pytest.raises(ValueError, match="reindex"):
        tp.apply(model, tp.FastV(4, positions="reindex"))


def kept_slots(inputs, run, b):
    """Original positions of sample b's real tokens that a pre-LLM pruner kept."""
    ids = inputs["input_ids"][b]
    real = inputs["attention_mask"][b].bool()
    visual = (ids == IMAGE_TOKEN) | (ids == VIDEO_TOKEN)
    keep = real & ~visual
    runs = {
        "image": (ids == IMAGE_TOKEN).nonzero().squeeze(1),
        "video": (ids == VIDEO_TOKEN).nonzero().squeeze(1),
    }
    offsets = {"image": 0, "video": 0}
    for record in (r for r in run.stats if r.sample == b):
        kind = "video" if len(record.grid) == 3 else "image"
        positions = runs[kind][offsets[kind] : offsets[kind] + record.tokens_before]
        keep[positions[list(record.kept_indices)]] = True
        offsets[kind] += record.tokens_before
    return keep.nonzero().squeeze(1)


def test_keep_positions_are_the_slice_of_unpruned_ones_and_decoding_continues_as_unpruned(model):
    family_inputs = inputs_for(model.config.model_type, "batch2")
    full, _ = unpruned_positions(model, family_inputs)
    unpruned_seen = language_model_positions(model, lambda: run_generate(model, family_inputs))
    with tp.apply(model, tp.DivPrune(3)) as run:
        seen = language_model_positions(model, lambda: run_generate(model, family_inputs))
    prefill = seen[0]
    assert prefill.shape[0] == 3
    for b in range(2):
        slots = kept_slots(family_inputs, run, b)
        assert torch.equal(prefill[:, b, -len(slots) :], full[:, b, slots])  # left padding
    assert len(seen) == len(unpruned_seen) == STEPS
    for pruned_step, unpruned_step in zip(seen[1:], unpruned_seen[1:]):
        assert torch.equal(pruned_step[-3:], unpruned_step[-3:])


def test_reindex_positions_are_contiguous_and_decoding_continues_after_kept_tokens(model):
    inputs = inputs_for(model.config.model_type, "batch2")
    with tp.apply(model, tp.DivPrune(3, positions="reindex")):
        seen = language_model_positions(model, lambda: run_generate(model, inputs))
    prefill = seen[0]
    real = [int(n) for n in inputs["attention_mask"].sum(1)]
    kept = [real[0] - 21, real[1] - 1 - 5]  # 24 -> 3; 4 -> 3 and 8 -> 3
    for b in range(2):
        for axis in range(3):
            assert prefill[axis, b, -kept[b] :].tolist() == list(range(kept[b]))
    for step, positions in enumerate(seen[1:], start=0):
        assert positions[-3:, :, -1].tolist() == [[k + step for k in kept]] * 3


def test_decode_positions_without_position_ids_follow_rope_deltas(model):
    """Manual decoding with the cache and no position ids: the model's own rule (cache length +
    rope_deltas) on unpruned coordinates, for keep and reindex."""
    inputs = {k: v for k, v in inputs_for(model.config.model_type, "batch1").items() if k != "attention_mask"}
    length = inputs["input_ids"].shape[1]
    full, deltas = unpruned_positions(
        model, {**inputs, "attention_mask": torch.ones_like(inputs["input_ids"])}
    )
    for positions, expected in (("keep", length + int(deltas)), ("reindex", length - 21)):
        with tp.apply(model, tp.UniformPrune(3, positions=positions)), torch.no_grad():
            out = model(**inputs, use_cache=True)
            step = {"input_ids": out.logits[:, -1:].argmax(-1), "past_key_values": out.past_key_values}
            seen = language_model_positions(model, lambda step=step: model(**step, use_cache=True))
        assert seen[0][:, 0, 0].tolist() == [expected] * 3


def test_per_frame_budget_splits_a_video_evenly(model):
    inputs = qwen_inputs([[("video", 6, 4, 8)]], model.config.model_type)  # 3 frames of 2 x 4 tokens
    with tp.apply(model, SplitByArea(pruner=tp.DivPrune(6))) as run:
        run_forward(model, inputs)
    (record,) = run.stats
    assert record.grid == (3, 2, 4) and record.tokens_after == 6
    assert [sum(1 for i in record.kept_indices if i // 8 == t) for t in range(3)] == [2, 2, 2]


def test_deepstack_follows_pre_llm_selection():
    """The adapter's output equals the model's own text path fed with the pruned sequence and the
    DeepStack rows of the kept tokens."""
    model = _models.setdefault("qwen3_vl", tiny_qwen("qwen3_vl"))
    inputs = inputs_for("qwen3_vl", "batch2")
    with tp.apply(model, tp.DivPrune(3)) as run:
        logits = run_forward(model, inputs)
    full, _ = unpruned_positions(model, inputs)
    vlm = model.model
    with torch.no_grad():
        images = vlm.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        videos = vlm.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        rows = []
        for b in range(2):
            slots = kept_slots(inputs, run, b)
            embeds = vlm.get_input_embeddings()(inputs["input_ids"][b])
            deepstack = [torch.zeros_like(embeds) for _ in images.deepstack_features]
            for token, output in ((IMAGE_TOKEN, images), (VIDEO_TOKEN, videos)):
                where = inputs["input_ids"][b] == token
                offset = 0 if b == 0 or token == VIDEO_TOKEN else int((inputs["input_ids"][0] == token).sum())
                count = int(where.sum())
                if count:
                    embeds[where] = torch.cat(output.pooler_output)[offset : offset + count]
                    for level, features in zip(deepstack, compat.deepstack_features(output)):
                        level[where] = features[offset : offset + count]
            visual = (inputs["input_ids"][b] == IMAGE_TOKEN) | (inputs["input_ids"][b] == VIDEO_TOKEN)
            hidden = vlm.language_model(
                inputs_embeds=embeds[slots][None],
                position_ids=full[:, b : b + 1, slots],
                visual_pos_masks=visual[slots][None],
                deepstack_visual_embeds=[level[slots][visual[slots]] for level in deepstack],
            ).last_hidden_state
            rows.append(model.lm_head(hidden)[0])
    for b in range(2):
        torch.testing.assert_close(logits[b, -len(rows[b]) :], rows[b], rtol=1e-5, atol=1e-5)


def test_deepstack_follows_in_llm_pruning():
    """With tokens dropped before layer 1, layer 1's DeepStack rows are added to the surviving visual
    tokens only: equal to a layer-by-layer reference built from the model's modules."""
    model = _models.setdefault("qwen3_vl", tiny_qwen("qwen3_vl"))
    inputs = inputs_for("qwen3_vl", "batch1")
    with tp.apply(model, EveryOtherToken(1.0)):
        logits = run_forward(model, inputs)
    vlm, lm = model.model, model.model.language_model
    full, _ = unpruned_positions(model, inputs)
    with torch.no_grad():
        images = vlm.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        ids = inputs["input_ids"][0]
        visual = ids == IMAGE_TOKEN
        hidden = vlm.get_input_embeddings()(ids)[None]
        hidden[0, visual] = torch.cat(images.pooler_output)
        deepstack = compat.deepstack_features(images)
        keep = torch.ones_like(ids, dtype=torch.bool)
        keep[visual.nonzero().squeeze(1)[1::2]] = False
        for i, layer in enumerate(lm.layers):
            positions = full if i == 0 else full[..., keep]
            cos_sin = lm.rotary_emb(hidden, positions)
            hidden = layer(hidden, attention_mask=None, position_embeddings=cos_sin, position_ids=None)
            if i < len(deepstack):
                rows = deepstack[i] if i == 0 else deepstack[i][0::2]
                now_visual = visual if i == 0 else visual[keep]
                hidden = hidden.clone()
                hidden[0, now_visual] += rows
            if i == 0:
                hidden = hidden[:, keep]
        expected = model.lm_head(lm.norm(hidden))
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def eager_vision_attention(model, inputs, block_index):
    """Per-patch mean attention received in one vision block, from the eager attention weights."""
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    tower = eager.model.visual
    module = sys.modules[type(tower).__module__]
    original = module.eager_attention_forward
    recorded, active = [], []

    def spy(*args, **kwargs):
        output, weights = original(*args, **kwargs)
        if active:
            recorded.append(weights[0].float().mean(dim=(0, 1)))
        return output, weights

    block = tower.blocks[block_index]
    hooks = [
        block.register_forward_pre_hook(lambda *a: active.append(True)),
        block.register_forward_hook(lambda *a: active.clear()),
    ]
    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(module, "eager_attention_forward", spy)
        tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    for hook in hooks:
        hook.remove()
    return torch.cat(recorded)


@pytest.mark.parametrize("block_elements", [None, 64], ids=["one-block", "16-row-blocks"])
def test_vision_attention_matches_eager(model, block_elements, monkeypatch):
    if block_elements is not None:  # several query blocks per image, the last one partial
        monkeypatch.setattr(tokenprune.attention, "QUERY_BLOCK_ELEMENTS", block_elements)
    family = model.config.model_type
    inputs = qwen_inputs([[("image", 8, 12)], [("image", 4, 4), ("image", 4, 8)]], family)
    block_index = max(model.config.vision_config.fullatt_block_indexes) if family == "qwen2_5_vl" else 2
    per_patch = eager_vision_attention(model, inputs, block_index)
    expected = per_patch.view(-1, 4).mean(dim=1)  # tower order, merge groups of 2 x 2 patches
    if family == "qwen2_5_vl":
        from transformers.vision_utils import get_vision_window_index

        window_index, _ = get_vision_window_index(inputs["image_grid_thw"], 2, 16, 4)
        restored = torch.empty_like(expected)
        restored[window_index] = expected
        expected = restored
    seen = []
    original = tp.FoPru.select

    def spy(self, tokens):
        seen.append(tokens.attention)
        return original(self, tokens)

    with tp.apply(model, tp.FoPru(2)), pytest.MonkeyPatch.context() as patch:
        patch.setattr(tp.FoPru, "select", spy)
        run_forward(model, inputs)
    torch.testing.assert_close(torch.cat(seen), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("heads_per_step", [1, 3], ids=["cpu-per-head", "device-all-heads"])
def test_attention_received_in_query_blocks_equals_softmax_columns(heads_per_step):
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(2, 3, 37, 8, generator=generator) * 3  # large logits: the row max matters
    keys = torch.randn(2, 3, 50, 8, generator=generator) * 3
    expected = torch.softmax(queries @ keys.transpose(-1, -2) * 0.3, dim=-1).mean(dim=(1, 2))
    # blocks of 16, 16 and 5 query rows
    got = tokenprune.attention.attention_received_in_blocks(
        queries, keys, 0.3, heads_per_step, heads_per_step * 800
    )
    assert got.shape == (2, 50) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(tokenprune.attention.mean_attention_received(queries, keys, 0.3), expected)


@pytest.mark.parametrize("layer", [1, 3])
def test_recomputed_last_token_attention_matches_eager(model, layer):
    inputs = inputs_for(model.config.model_type, "batch2")
    positions, _ = unpruned_positions(model, inputs)
    weights, rows = eager_weights_and_recomputed_rows(
        model, inputs["input_ids"], inputs["attention_mask"], positions, layer
    )
    ours = torch.softmax(rows.logits(window=1, rope=True), dim=-1)
    torch.testing.assert_close(ours[:, :, 0], weights[:, :, -1].float(), rtol=1e-4, atol=1e-6)


def hook_count(model):
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def test_text_only_prompt_passes_through_and_hooks_are_removed(model):
    ids = torch.randint(3, IMAGE_TOKEN, (1, 12))
    reference_logits = run_forward(model, {"input_ids": ids})
    before = hook_count(model)
    with (
        pytest.raises(RuntimeError, match="boom"),
        tp.apply(model, tp.compose(tp.DivPrune(4), tp.FastV(2))) as run,
    ):
        assert torch.equal(run_forward(model, {"input_ids": ids}), reference_logits)
        assert len(run.stats) == 0
        raise RuntimeError("boom")
    assert hook_count(model) == before


def test_bad_inputs_raise_clear_errors(model):
    inputs = inputs_for(model.config.model_type, "batch1")
    wrong_grid = dict(inputs, image_grid_thw=torch.tensor([[1, 8, 8]]))
    with tp.apply(model, tp.DivPrune(4)):
        with pytest.raises(ValueError, match="image tokens"):
            run_forward(model, wrong_grid)
        embeds = model.model.get_input_embeddings()(inputs["input_ids"])
        with pytest.raises(ValueError, match="input_ids"):
            run_forward(
                model, {**{k: v for k, v in inputs.items() if k != "input_ids"}, "inputs_embeds": embeds}
            )
