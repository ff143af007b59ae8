"""Prompt-token skipping in prefill (LazySkip, GemFilter) on Llama, Mistral, Qwen2 and Qwen3 causal LMs:
recomputed scores vs eager attention, decode consistency against a
no-cache loop that replays the same selection, per-layer KV lengths, left padding, bad schedules.
Equivalence when nothing is dropped is in test_contract.py."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch

import tokenprune as tp
from tiny_models import llava_inputs, padded_batch, tiny_causal_lm, tiny_llava
from tokenprune.attention import head_mean_probabilities
from tokenprune.pruners.base import LayerContext, LayerPruner
from tokenprune.pruners.prefill import PrefillPruner, PromptContext

SCHEDULE = ((1, 0.6), (2, 0.4), (3, 0.25))
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
REPLAYED = 8  # decoding steps checked against the no-cache loop (it re-runs the whole prompt per step)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run far faster on one thread on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return tiny_causal_lm(request.param)


@pytest.fixture(scope="module")
def batch():
    return padded_batch()


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def greedy(model, inputs, n=20):
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=n, do_sample=False, pad_token_id=0)


def no_cache_greedy(model, inputs, n=20):
    """Greedy decoding that re-runs the whole (pruned) forward each step, with generate's position ids."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        for _ in range(n):
            positions = (mask.cumsum(1) - 1).masked_fill(mask == 0, 0)
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
            ids = torch.cat([ids, out[:, -1].argmax(-1, keepdim=True)], dim=1)
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
    return ids


def prompt_lengths(inputs) -> list[int]:
    return inputs["attention_mask"].sum(1).tolist()


# -- LazySkip ---------------------------------------------------------------------------------------


@dataclass
class ReplayLayers(LayerPruner):
    """Keeps, at each layer, the prompt tokens a recorded LazySkip run kept, and every later token."""

    budget: int | float = 1.0
    at: tuple[int, ...] = ()
    kept: dict | None = None  # (layer, sample) -> kept prompt origins
    prompt: tuple[int, ...] = ()

    def layers(self):
        return self.at

    def select_layer(self, ctx: LayerContext):
        result = []
        for b in range(len(ctx.groups)):
            origins = ctx.origins[b][0]
            recorded = torch.tensor(self.kept[(ctx.layer, b)], dtype=torch.long)
            keep = torch.isin(origins, recorded) | (origins >= self.prompt[b] - 1)
            result.append([keep.nonzero().squeeze(1)])
        return result


def test_scores_match_eager_attention_of_previous_layer(model, batch):
    seen = {}

    @dataclass
    class Spy(tp.LazySkip):
        def select_layer(self, ctx):
            seen.setdefault(ctx.layer, head_mean_probabilities(ctx.attention.logits(window=self.window)))
            return super().select_layer(ctx)

    with tp.apply(model, Spy(schedule=((2, 0.5),), window=4)):
        logits(model, batch)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        weights = eager(**batch, output_attentions=True).attentions
    expected = weights[1][:, :, -4:, :].mean(dim=(1, 2))  # last 4 queries of layer 1, before layer 2
    torch.testing.assert_close(seen[2], expected, rtol=1e-4, atol=1e-6)


def test_budgets_sinks_window_and_kv_lengths(model, batch):
    lengths = prompt_lengths(batch)
    with tp.apply(model, tp.LazySkip(schedule=SCHEDULE, sinks=3, window=5)) as run, torch.no_grad():
        cache = model(**batch, use_cache=True).past_key_values
    records = run.stats.for_stage("llm")
    assert [(r.layer, r.sample) for r in records] == [(layer, b) for layer, _ in SCHEDULE for b in range(2)]
    for r in records:
        keep = dict(SCHEDULE)[r.layer]
        group = lengths[r.sample] - 1
        assert r.tokens_after == max(round(keep * group), 8) == len(r.kept_indices)
        assert set(range(3)) | set(range(group - 5, group)) <= set(r.kept_indices)
    # a layer caches its sample's kept prompt tokens plus the final one, left-padded to the longest
    widths = [max(lengths)] + [
        max(r.tokens_after + 1 for r in records if r.layer == layer) for layer, _ in SCHEDULE
    ]
    assert [layer.keys.shape[-2] for layer in cache.layers] == widths


def check_cached_generation_against_replay(model, batch, pruner, replay_of) -> None:
    """Greedy generation with `pruner` is deterministic and equals a no-cache loop that replays its
    prefill selection (`replay_of(records)`) at every step."""
    with tp.apply(model, pruner) as run:
        first = greedy(model, batch)
        second = greedy(model, batch)
    assert torch.equal(first, second)
    with tp.apply(model, replay_of(run.stats.records)):
        reference = no_cache_greedy(model, batch, n=REPLAYED)
    assert torch.equal(first[:, : reference.shape[1]], reference)


def test_generation_after_pruned_prefill_matches_no_cache_replay(model, batch):
    def replay_of(records):
        prefill = records[: len(SCHEDULE) * 2]
        return ReplayLayers(
            at=tuple(layer for layer, _ in SCHEDULE),
            kept={(r.layer, r.sample): r.kept_indices for r in prefill},
            prompt=tuple(prompt_lengths(batch)),
        )

    check_cached_generation_against_replay(model, batch, tp.LazySkip(schedule=SCHEDULE), replay_of)


def test_generate_caches_only_kept_tokens_per_layer():
    model = tiny_causal_lm("llama")
    inputs = padded_batch((36,))
    with tp.apply(model, tp.LazySkip(schedule=SCHEDULE, sinks=2, window=2)) as run, torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False, return_dict_in_generate=True)
    kept = [r.tokens_after + 1 for r in run.stats]
    assert [layer.keys.shape[-2] for layer in out.past_key_values.layers] == [36 + 4] + [k + 4 for k in kept]


def test_default_schedule_is_relative_to_depth():
    model = tiny_causal_lm("llama", layers=8)
    with tp.apply(model, tp.LazySkip()) as run:
        logits(model, padded_batch((60,)))
    assert [(r.layer, r.tokens_after) for r in run.stats] == [
        (2, 30),
        (4, 15),
        (6, 12),
    ]  # the last stage is floored at sinks + window
    assert tp.LazySkip().for_depth(32).schedule == ((8, 0.5), (16, 0.25), (24, 0.1))
    assert tp.LazySkip().budget == 0.1


@pytest.mark.parametrize(
    "schedule",
    [
        [],
        [(2, 0.5), (2, 0.3)],
        [(3, 0.5), (2, 0.3)],
        [(0, 0.5)],
        [(1, 0.0)],
        [(1, 1.5)],
        [(1, -0.2)],
        [(1, 0.3), (2, 0.5)],
        [(1, 0.5), (0.5, 0.3)],
        [(1.5, 0.5)],
        [(1, "half")],
        [(1,)],
    ],
)
def test_bad_schedules_raise(schedule):
    with pytest.raises(ValueError):
        tp.LazySkip(schedule=schedule)


def test_schedule_beyond_model_depth_raises():
    model = tiny_causal_lm("llama")
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        tp.apply(model, tp.LazySkip(schedule=((2, 0.5), (4, 0.3))))
    with pytest.raises(ValueError, match="distinct layers"):
        tp.apply(model, tp.LazySkip(schedule=((0.3, 0.5), (0.35, 0.3))))
    assert not model._forward_pre_hooks and not model.model.layers[2]._forward_pre_hooks


# -- GemFilter -----------------------------------------------------------------------------------------


@dataclass
class ReplayPrompt(PrefillPruner):
    """Prefills the prompt tokens a recorded GemFilter run kept, and every later token."""

    budget: int | float = 1.0
    filter_layer: int = 1
    kept: dict | None = None  # sample -> kept indices among real tokens
    prompt: tuple[int, ...] = ()

    def select_prompt(self, ctx: PromptContext):
        result = []
        for b, candidates in enumerate(ctx.candidates):
            rank = torch.arange(len(candidates))
            keep = torch.isin(rank, torch.tensor(self.kept[b])) | (rank >= self.prompt[b] - 1)
            result.append(keep.nonzero().squeeze(1))
        return result


@pytest.mark.parametrize("positions", ["keep", "reindex"])
def test_gemfilter_prefills_exactly_the_selected_tokens(model, batch, positions):
    with tp.apply(model, tp.GemFilter(filter_layer=2, budget=12, positions=positions)) as run:
        pruned = logits(model, batch)
    mask = batch["attention_mask"]
    for b, record in enumerate(run.stats):
        assert record.tokens_after == len(record.kept_indices) == 12
        real = mask[b].nonzero().squeeze(1)
        assert record.kept_indices[-1] == len(real) - 1  # the final token is always prefilled
        kept = real[list(record.kept_indices)]
        ids = batch["input_ids"][b, kept][None]
        original = (mask[b].cumsum(0) - 1)[kept][None]
        position_ids = original if positions == "keep" else torch.arange(12)[None]
        expected = logits(model, {"input_ids": ids, "position_ids": position_ids})
        torch.testing.assert_close(pruned[b, -12:], expected[0], rtol=1e-4, atol=1e-5)


def test_gemfilter_scores_match_eager_attention(model, batch):
    seen = {}

    @dataclass
    class Spy(tp.GemFilter):
        def select_prompt(self, ctx):
            seen["rows"] = torch.softmax(ctx.attention.logits(window=1), dim=-1).nan_to_num(0.0)
            return super().select_prompt(ctx)

    with tp.apply(model, Spy(filter_layer=2, budget=10)):
        logits(model, batch)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        weights = eager(**batch, output_attentions=True).attentions
    torch.testing.assert_close(seen["rows"], weights[2][:, :, -1:, :], rtol=1e-4, atol=1e-6)


def test_gemfilter_generation_matches_no_cache_replay(model, batch):
    def replay_of(records):
        return ReplayPrompt(
            filter_layer=2,
            kept={r.sample: r.kept_indices for r in records[:2]},
            prompt=tuple(prompt_lengths(batch)),
        )

    check_cached_generation_against_replay(model, batch, tp.GemFilter(filter_layer=2, budget=15), replay_of)


def test_gemfilter_bad_arguments_raise():
    model = tiny_causal_lm("llama")
    with pytest.raises(ValueError, match="filter_layer"):
        tp.apply(model, tp.GemFilter(filter_layer=4, budget=8))
    with pytest.raises(ValueError, match="pool"):
        tp.GemFilter(filter_layer=1, budget=8, pool=4)
    with pytest.raises(ValueError, match="cannot be composed"):
        tp.apply(model, tp.compose(tp.GemFilter(filter_layer=1, budget=8), tp.LazySkip(schedule=((2, 0.5),))))
    assert not model.model._forward_pre_hooks


def test_sliding_window_longer_than_prompt_is_refused():
    model = tiny_causal_lm("mistral", sliding_window=16)
    with (
        tp.apply(model, tp.LazySkip(schedule=((2, 0.5),))),
        pytest.raises(ValueError, match="sliding-window"),
    ):
        logits(model, padded_batch((30,)))


# -- inside an LVLM ------------------------------------------------------------------------------------


def test_gemfilter_composes_with_visual_pruner_in_llava():
    model = tiny_llava()
    inputs = llava_inputs(model, [(5, 7), (2, 3)])
    with tp.apply(model, tp.DivPrune(16)):
        reference = logits(model, inputs)
    with tp.apply(model, tp.compose(tp.DivPrune(16), tp.GemFilter(filter_layer=2, budget=1.0))):
        torch.testing.assert_close(logits(model, inputs), reference, rtol=0, atol=1e-5)
    with tp.apply(model, tp.compose(tp.DivPrune(16), tp.GemFilter(filter_layer=2, budget=20))) as run:
        pruned = logits(model, inputs)
        first = greedy(model, inputs, n=5)
        second = greedy(model, inputs, n=5)
    assert pruned.shape[1] == 20 and torch.equal(first, second)
    stages = [(r.stage, r.tokens_before, r.tokens_after) for r in run.stats[:4]]
    assert stages == [("pre_llm", 36, 16), ("pre_llm", 36, 16), ("prefill", 29, 20), ("prefill", 22, 20)]
