"""The contract every adapter keeps, checked over model families x pruners: a full budget reproduces the
unpruned model, budgets are exact through forward and generate, cached decoding equals re-running the
pruned prompt without a cache, and each sample of a padded batch decodes as it would alone.
Family-specific behaviour (positions, M-RoPE, DeepStack, anyres layout, scores vs eager, errors) is
tested in each family's own file."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from next_models import image_inputs, placeholder_groups, tiny_llava_next, tiny_llava_onevision, video_inputs
from qwen_models import FAMILIES as QWEN_FAMILIES
from qwen_models import qwen_inputs, tiny_qwen, unpruned_positions

import tokenprune as tp
from tiny_models import llava_inputs, padded_batch, tiny_causal_lm, tiny_llava
from tokenprune.pruners.base import LayerPruner
from tokenprune.pruners.views import SplitByArea


class EveryOtherToken(LayerPruner):
    """A deterministic in-LLM pruner: keeps every other visual token whatever the attention says."""

    def __init__(self, budget, at: int, positions: str = "keep"):
        super().__init__(budget, positions=positions)
        self.at = at

    def layers(self):
        return (self.at,)

    def select_layer(self, ctx):
        return [[torch.arange(0, len(g), 2) for g in groups] for groups in ctx.groups]


def visual_pruners(budget, pre_budget):
    """Every visual pruner by name; `pre_budget` is the pre-LLM stage's in front of an in-LLM one."""
    return {
        "divprune": lambda: tp.DivPrune(budget),
        "visionzip": lambda: tp.VisionZip(budget),
        "fopru-rank": lambda: tp.FoPru(budget),
        "fopru-row": lambda: tp.FoPru(budget, strategy="row"),
        "random": lambda: tp.RandomPrune(budget),
        "uniform": lambda: tp.UniformPrune(budget),
        "fastv": lambda: tp.FastV(budget),
        "feather": lambda: tp.Feather(budget, layers_at=(1, 3)),
        "divprune+fastv": lambda: tp.compose(tp.DivPrune(pre_budget), tp.FastV(budget)),
        "area-split": lambda: SplitByArea(tp.UniformPrune(budget)),
        "zerotprune": lambda: tp.ZeroTPrune(budget),
        "tome": lambda: tp.ToMe(budget),
        "tome+visionzip": lambda: tp.compose(tp.ToMe(budget), tp.VisionZip(budget)),
        "cdpruner": lambda: tp.CDPruner(budget),
        "dart": lambda: tp.DART(budget),
        "cdpruner-recycle": lambda: tp.Recycle(tp.CDPruner(budget), slots=0.25),
    }


def prompt_pruners(budget):
    """Every prompt pruner by name at `budget`; LazySkip keeps `budget` at both of its layers."""
    return {
        "lazyskip": lambda: tp.LazySkip(schedule=((1, budget), (3, budget))),
        "gemfilter": lambda: tp.GemFilter(filter_layer=2, budget=budget),
    }


# steps of the in-tower pruners in the tiny LLaVA tower (two blocks feed its features): one per block
TOWER_STEPS = 2


def stage_count(name):
    if name in ("zerotprune", "tome"):
        return TOWER_STEPS
    if name == "tome+visionzip":
        return TOWER_STEPS + 1
    return 2 if name in ("feather", "divprune+fastv", "lazyskip") else 1


def one_d_positions(model, inputs):
    mask = inputs["attention_mask"]
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def qwen_positions(model, inputs):
    return unpruned_positions(model, inputs)[0]


@dataclass(frozen=True)
class Family:
    """How to build, feed and slice one model family.

    `layout(model, inputs, pruner name)`: per sample, (candidate count, grid or None) of each group of
    prunable tokens in prompt order. `alone(model, inputs, b)`: sample b of a batch, without padding. `pre_llm_repacks`: pre-LLM
    pruning drops the batch's old padding and re-pads to the longest kept sample (otherwise only the
    shortest drop is taken out of the width). `newlines(model, inputs, embeds)`: newline rows in each
    sample's language-model input, for families whose images carry them."""

    build: Callable
    inputs: dict  # "one" (a single sample) and "two" (a left-padded two-sample batch) -> builder(model)
    steps: int
    pruners: tuple[str, ...]
    full_budget: int | float
    budgets: tuple  # (budget, the pre-LLM budget in front of an in-LLM one)
    budget_batches: tuple[str, ...]
    cached: dict  # id -> pruner factory, decoded with the cache and without it
    padded_pruner: Callable
    layout: Callable
    alone: Callable
    positions: Callable = one_d_positions
    pre_llm_repacks: bool = False
    newlines: Callable | None = None
    mrope: bool = False  # M-RoPE positions: decoding continues from the last prompt position


def llava_alone(model, inputs, b):
    real = inputs["attention_mask"][b].bool()
    return {
        "input_ids": inputs["input_ids"][b : b + 1, real],
        "attention_mask": inputs["attention_mask"][b : b + 1, real],
        "pixel_values": inputs["pixel_values"][b : b + 1],
    }


def qwen_alone(model, inputs, b):
    """Sample 0 holds one 8 x 12-patch image (96 patches); sample 1 a 4 x 4-patch image and the video."""
    real = inputs["attention_mask"][b].bool()
    alone = {k: inputs[k][b : b + 1, real] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    patches, images = [(slice(0, 96), slice(0, 1)), (slice(96, 112), slice(1, 2))][b]
    alone.update(
        pixel_values=inputs["pixel_values"][patches], image_grid_thw=inputs["image_grid_thw"][images]
    )
    if b == 1:
        alone.update(
            pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=inputs["video_grid_thw"]
        )
    return alone


def text_alone(model, inputs, b):
    real = inputs["attention_mask"][b].bool()
    return {k: inputs[k][b : b + 1, real] for k in ("input_ids", "attention_mask")}


def next_layout(model, inputs, name):
    return [[(count, None) for count, _ in groups] for groups in placeholder_groups(model, inputs)]


def next_alone(model, inputs, b):
    real = inputs["attention_mask"][b].bool()
    alone = {k: inputs[k][b : b + 1, real] for k in ("input_ids", "attention_mask")}
    if "pixel_values_videos" in inputs:
        return dict(alone, pixel_values_videos=inputs["pixel_values_videos"][b : b + 1])
    counts = [len(groups) for groups in placeholder_groups(model, inputs)]
    images = slice(sum(counts[:b]), sum(counts[: b + 1]))
    alone.update(pixel_values=inputs["pixel_values"][images], image_sizes=inputs["image_sizes"][images])
    if "batch_num_images" in inputs:
        alone["batch_num_images"] = inputs["batch_num_images"][b : b + 1]
    return alone


def text_layout(model, inputs, name):
    """LazySkip never drops a prompt's final token; GemFilter selects among all of them."""
    return [[(int(n) - (name == "lazyskip"), None)] for n in inputs["attention_mask"].sum(1)]


def next_newlines(model, inputs, embeds):
    expected = torch.tensor([sum(lines for _, lines in g) for g in placeholder_groups(model, inputs)])
    return (embeds == model.model.image_newline).all(-1).sum(-1), expected


LLAVA_TOKENS = 36  # 84 px / 14 px patches -> 6 x 6 grid
NEXT_BUDGET = 8
LLAVA_LIKE_CACHED = {
    "pre-llm-keep": lambda: tp.UniformPrune(9),
    "pre-llm-reindex": lambda: tp.UniformPrune(9, positions="reindex"),
    "in-llm-keep": lambda: EveryOtherToken(LLAVA_TOKENS, at=2),
    "in-llm-reindex": lambda: EveryOtherToken(LLAVA_TOKENS, at=2, positions="reindex"),
    "both-keep": lambda: tp.compose(tp.UniformPrune(20), EveryOtherToken(LLAVA_TOKENS, at=2)),
    "both-reindex": lambda: tp.compose(
        tp.UniformPrune(20, positions="reindex"), EveryOtherToken(LLAVA_TOKENS, at=2, positions="reindex")
    ),
}
TOWER_CACHED = {
    "in-tower-drop": lambda: tp.ZeroTPrune(12),
    "in-tower-merge-reindex": lambda: tp.ToMe(12, positions="reindex"),
    "three-stages": lambda: tp.compose(tp.ToMe(20), tp.UniformPrune(12), EveryOtherToken(LLAVA_TOKENS, at=2)),
}
QWEN_CACHED = {
    "pre-llm-keep": lambda: tp.UniformPrune(3),
    "pre-llm-reindex": lambda: tp.UniformPrune(3, positions="reindex"),
    "in-llm-keep": lambda: EveryOtherToken(1.0, at=1),
    "both-keep": lambda: tp.compose(tp.UniformPrune(6), EveryOtherToken(1.0, at=1)),
    "both-reindex": lambda: tp.compose(
        tp.UniformPrune(6, positions="reindex"), EveryOtherToken(1.0, at=1, positions="reindex")
    ),
}
VISUAL = (
    "divprune",
    "visionzip",
    "fopru-rank",
    "fopru-row",
    "random",
    "uniform",
    "fastv",
    "feather",
    "cdpruner",
    "dart",
    "cdpruner-recycle",
)
NEXT_PRUNERS = tuple(n for n in VISUAL if n != "fopru-rank") + ("divprune+fastv", "area-split")
NEXT_COMMON = dict(
    steps=4,
    pruners=NEXT_PRUNERS,
    full_budget=1.0,
    budgets=((NEXT_BUDGET, 2 * NEXT_BUDGET),),
    budget_batches=("one", "two"),
    padded_pruner=lambda: tp.compose(tp.DivPrune(2 * NEXT_BUDGET), tp.FastV(NEXT_BUDGET)),
    layout=next_layout,
    alone=next_alone,
    pre_llm_repacks=True,
    newlines=next_newlines,
)

FAMILIES = {
    "llava": Family(
        build=tiny_llava,
        inputs={
            "one": lambda m: llava_inputs(m, [(5, 7)]),
            "two": lambda m: llava_inputs(m, [(5, 7), (2, 3)], seed=1),
        },
        steps=6,
        pruners=VISUAL + ("divprune+fastv", "zerotprune", "tome", "tome+visionzip"),
        full_budget=LLAVA_TOKENS,
        budgets=((8, 8), (0.25, 0.25)),
        budget_batches=("two",),
        cached={**LLAVA_LIKE_CACHED, **TOWER_CACHED},
        padded_pruner=lambda: tp.compose(tp.DivPrune(12), tp.FastV(6)),
        layout=lambda m, inputs, name: [[(LLAVA_TOKENS, (6, 6))]] * len(inputs["input_ids"]),
        alone=llava_alone,
    ),
    "llava_next": Family(
        build=tiny_llava_next,
        inputs={
            "one": lambda m: image_inputs(m, [[(40, 80)]], seed=1),
            "two": lambda m: image_inputs(m, [[(84, 60)], [(30, 84), (84, 84)]], seed=2),
        },
        cached={
            "divprune": lambda: tp.DivPrune(NEXT_BUDGET),
            "divprune+feather": lambda: tp.compose(
                tp.DivPrune(2 * NEXT_BUDGET), tp.Feather(NEXT_BUDGET, layers_at=(2,), uniform_stride=1)
            ),
        },
        **NEXT_COMMON,
    ),
    # the 84 x 84 image's 12 x 12 canvas exceeds anyres_max_2 and is downsampled; the two-image
    # prompt is base-only
    "onevision_image": Family(
        build=tiny_llava_onevision,
        inputs={
            "one": lambda m: image_inputs(m, [[(84, 84)]], seed=1),
            "two": lambda m: image_inputs(m, [[(84, 84), (30, 50)], [(40, 80)]], seed=2),
        },
        cached={
            "visionzip": lambda: tp.VisionZip(NEXT_BUDGET),
            "divprune-reindex": lambda: tp.DivPrune(NEXT_BUDGET, positions="reindex"),
        },
        **NEXT_COMMON,
    ),
    "onevision_video": Family(
        build=tiny_llava_onevision,
        inputs={
            "one": lambda m: video_inputs(m, frames=3, batch=1),
            "two": lambda m: video_inputs(m, frames=3, batch=2),
        },
        cached={"uniform": lambda: tp.UniformPrune(NEXT_BUDGET)},
        **{**NEXT_COMMON, "layout": lambda m, inputs, name: [[(27, (3, 3, 3))]] * len(inputs["input_ids"])},
    ),
    **{
        family: Family(
            build=lambda family=family: tiny_qwen(family),
            # one 8 x 12-patch image (4 x 6 = 24 merged tokens); the batch adds a sample with a 4 x 4-patch
            # image (4 tokens) and a 4-frame 4 x 4-patch video (2 x 2 x 2 = 8 tokens)
            inputs={
                "one": lambda m, family=family: qwen_inputs([[("image", 8, 12)]], family, seed=1),
                "two": lambda m, family=family: qwen_inputs(
                    [[("image", 8, 12)], [("image", 4, 4), ("video", 4, 4, 4)]], family, seed=1
                ),
            },
            steps=3,
            pruners=VISUAL + ("divprune+fastv",),
            full_budget=1.0,
            budgets=((3, 3),),
            budget_batches=("two",),
            cached=QWEN_CACHED,
            padded_pruner=lambda: tp.compose(tp.DivPrune(3), tp.FastV(2)),
            layout=lambda m, inputs, name: [[(24, (4, 6))], [(4, (2, 2)), (8, (2, 2, 2))]][
                : len(inputs["input_ids"])
            ],
            alone=qwen_alone,
            positions=qwen_positions,
            mrope=True,
        )
        for family in QWEN_FAMILIES
    },
    **{
        family: Family(
            build=lambda family=family: tiny_causal_lm(family),
            inputs={"one": lambda m: padded_batch((40,)), "two": lambda m: padded_batch()},
            steps=6,
            pruners=("lazyskip", "gemfilter"),
            full_budget=1.0,
            budgets=(),
            budget_batches=(),
            cached={},
            padded_pruner=lambda: tp.LazySkip(schedule=((1, 0.6), (3, 0.25))),
            layout=text_layout,
            alone=text_alone,
        )
        for family in ("llama", "mistral", "qwen2", "qwen3")
    },
}
NEXT_FAMILIES = ("llava_next", "onevision_image", "onevision_video")

_models: dict = {}


def model_for(family):
    key = "onevision" if family.startswith("onevision") else family
    if key not in _models:
        _models[key] = FAMILIES[family].build()
    return _models[key]


def pruner(name, budget, pre_budget=None):
    table = {**visual_pruners(budget, pre_budget or budget), **prompt_pruners(budget)}
    return table[name]()


def forward(model, inputs, **extra):
    with torch.no_grad():
        return model(**inputs, **extra).logits


def generate(model, inputs, steps):
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=steps, do_sample=False, pad_token_id=0)


def greedy_without_cache(model, inputs, family):
    """Greedy decoding that re-runs the whole (pruned) prompt every step, with generate's positions."""
    spec = FAMILIES[family]
    positions = spec.positions(model, inputs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    types = inputs.get("mm_token_type_ids")
    for _ in range(spec.steps):
        step = {**inputs, "input_ids": ids, "attention_mask": mask}
        if types is not None:
            step["mm_token_type_ids"] = types
        logits = forward(model, step, position_ids=positions, use_cache=False)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if types is not None:
            types = torch.cat([types, torch.zeros_like(types[:, :1])], dim=1)
        positions = (
            torch.cat([positions, positions[..., -1:] + 1], dim=-1)
            if spec.mrope
            else one_d_positions(model, {"attention_mask": mask})
        )
    return ids


def params(cases):
    return [pytest.param(*case, id="-".join(str(part) for part in case)) for case in cases]


FULL_BUDGET_CASES = params(
    (family, name, batch)
    for family, spec in FAMILIES.items()
    for name in spec.pruners
    for batch in ("one", "two")
)
BUDGET_CASES = params(
    (family, name, budget, pre_budget, batch)
    for family, spec in FAMILIES.items()
    for name in spec.pruners
    # ToMe merges at most half of a block's tokens: the tiny tower's two blocks cannot reach these
    # budgets (its budgets are checked in test_tower.py, as are those of an in-tower stage composed)
    if name not in ("area-split", "tome", "tome+visionzip")
    for budget, pre_budget in spec.budgets
    for batch in spec.budget_batches
)
CACHED_CASES = params((family, case) for family, spec in FAMILIES.items() for case in spec.cached)


_references: dict = {}


def unpruned(model, family, batch):
    """Logits and greedy tokens of the unpruned model, computed once per family and batch."""
    if (family, batch) not in _references:
        inputs = FAMILIES[family].inputs[batch](model)
        _references[family, batch] = (forward(model, inputs), generate(model, inputs, FAMILIES[family].steps))
    return _references[family, batch]


@pytest.mark.parametrize(("family", "name", "batch"), FULL_BUDGET_CASES)
def test_full_budget_equals_unpruned(family, name, batch):
    spec = FAMILIES[family]
    model = model_for(family)
    inputs = spec.inputs[batch](model)
    reference_logits, reference_tokens = unpruned(model, family, batch)
    layout = spec.layout(model, inputs, name)
    with tp.apply(model, pruner(name, spec.full_budget)) as run:
        logits, tokens = forward(model, inputs), generate(model, inputs, spec.steps)
    torch.testing.assert_close(logits, reference_logits, rtol=0, atol=1e-5)
    assert torch.equal(tokens, reference_tokens)
    assert {r.stage for r in run.stats} == {stage.stage for stage in run.pruner.stages}
    # one record per group and stage, at the prefill of forward and of generate, keeping every token
    assert len(run.stats) == 2 * sum(len(g) for g in layout) * stage_count(name)
    for record in run.stats:
        assert record.tokens_after == record.tokens_before == layout[record.sample][record.group][0]


def check_exact_budgets(records, layout, name, budget, pre_budget):
    """One record per group and stage; a pre-LLM stage and the last stage keep exactly their budgets."""
    assert len(records) == sum(len(g) for g in layout) * stage_count(name), [r.stage for r in records]
    last = records[-1]
    final = [r for r in records if (r.stage, r.layer) == (last.stage, last.layer)]
    assert [(r.sample, r.group) for r in final] == [
        (b, g) for b, groups in enumerate(layout) for g in range(len(groups))
    ]
    for record in final:
        count, grid = layout[record.sample][record.group]
        assert record.tokens_after == tp.budget.resolve_budget(budget, count) == len(record.kept_indices)
        kept = list(record.kept_indices)
        assert kept == sorted(set(kept)) and kept[0] >= 0 and kept[-1] < count
        assert math.prod(record.grid) == count and record.seconds >= 0
        assert grid is None or record.grid == grid
    for record in records:
        if record.stage == "pre_llm":
            count = layout[record.sample][record.group][0]
            assert record.tokens_before == count
            assert record.tokens_after == tp.budget.resolve_budget(
                pre_budget if "+" in name else budget, count
            )
    return {(r.sample, r.group): r.tokens_after for r in final}


@pytest.mark.parametrize(("family", "name", "budget", "pre_budget", "batch"), BUDGET_CASES)
def test_budgets_are_exact_through_forward_and_generate(family, name, budget, pre_budget, batch):
    spec = FAMILIES[family]
    model = model_for(family)
    inputs = spec.inputs[batch](model)
    layout = spec.layout(model, inputs, name)
    embeds = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda m, a, k: embeds.append(k.get("inputs_embeds")), with_kwargs=True
    )
    try:
        with tp.apply(model, pruner(name, budget, pre_budget)) as run:
            logits = forward(model, inputs)
            forward_records = list(run.stats)
            run.stats.clear()
            tokens = generate(model, inputs, spec.steps)
            generate_records = list(run.stats)
    finally:
        hook.remove()
    kept = check_exact_budgets(forward_records, layout, name, budget, pre_budget)
    check_exact_budgets(generate_records, layout, name, budget, pre_budget)
    dropped = torch.tensor(
        [sum(n - kept[b, g] for g, (n, _) in enumerate(groups)) for b, groups in enumerate(layout)]
    )
    real = inputs["attention_mask"].sum(1)
    # in-LLM pruning, and pre-LLM pruning in repacking adapters, re-pad to the longest kept sample;
    # otherwise pre-LLM packing keeps the padding slots and only the smallest drop shortens the batch
    if spec.pre_llm_repacks or any(
        r.stage == "llm" and r.tokens_after < r.tokens_before for r in forward_records
    ):
        assert logits.shape[1] == int((real - dropped).max())
    else:
        assert logits.shape[1] == inputs["input_ids"].shape[1] - int(dropped.min())
    assert tokens.shape == (len(layout), inputs["input_ids"].shape[1] + spec.steps)
    if spec.newlines is not None and any(r.stage == "pre_llm" for r in forward_records):
        seen, expected = spec.newlines(model, inputs, embeds[0])
        assert torch.equal(seen, expected)  # every newline token reaches the language model


@pytest.mark.parametrize(("family", "case"), CACHED_CASES)
def test_cached_generate_equals_recomputing_the_pruned_prompt(family, case):
    spec = FAMILIES[family]
    model = model_for(family)
    inputs = spec.inputs["two"](model)
    assert torch.equal(
        unpruned(model, family, "two")[1], greedy_without_cache(model, inputs, family)
    )  # a sound reference
    with tp.apply(model, spec.cached[case]()):
        cached = generate(model, inputs, spec.steps)
        recomputed = greedy_without_cache(model, inputs, family)
    assert torch.equal(cached, recomputed)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_padded_batch_matches_each_sample_alone(family):
    spec = FAMILIES[family]
    model = model_for(family)
    inputs = spec.inputs["two"](model)
    alone = [spec.alone(model, inputs, b) for b in range(2)]
    with tp.apply(model, spec.padded_pruner()) as run:
        together = generate(model, inputs, spec.steps)
        assert any(r.tokens_after < r.tokens_before for r in run.stats)
        for b in range(2):
            assert torch.equal(
                generate(model, alone[b], spec.steps)[0, -spec.steps :], together[b, -spec.steps :]
            )


VISION_FAMILIES = [f for f, spec in FAMILIES.items() if "divprune" in spec.pruners]


def pooled_count(grid, factor):
    frames = grid[0] if len(grid) == 3 else 1
    return frames * math.ceil(grid[-2] / factor) * math.ceil(grid[-1] / factor)


@pytest.mark.parametrize(
    ("family", "pruner_factory"),
    params(
        (family, case)
        for family in VISION_FAMILIES
        for case in (
            "downsample",
            "adaptive",
            "adaptive-relevance",
            "adaptive-recycle",
            "adaptive-layer",
            "cdpruner-recycle",
            "dart",
        )
    ),
)
def test_pooling_adaptive_recycling_and_dart_decode_each_padded_sample_as_alone(family, pruner_factory):
    """Downsample's counts follow the grid; Adaptive picks a count per image (different ones within
    the batch); Recycle's summary tokens and DART's picks keep the budget; each sample of a padded
    batch decodes as it would alone."""
    spec = FAMILIES[family]
    model = model_for(family)
    inputs = spec.inputs["two"](model)
    layout = spec.layout(model, inputs, pruner_factory)
    make = {
        "downsample": lambda: tp.Downsample(2),
        "adaptive": lambda: tp.Adaptive(tp.CDPruner(1.0), target=0.6, rule="mass"),
        "adaptive-relevance": lambda: tp.Adaptive(
            tp.CDPruner(0.75, two_sided=True), target=0.5, rule="relevance", min_tokens=0.1
        ),
        "adaptive-recycle": lambda: tp.Recycle(
            tp.Adaptive(tp.CDPruner(1.0), target=0.6, rule="mass"), slots=1
        ),
        "adaptive-layer": lambda: tp.AdaptiveLayer(tp.FastV(1.0), target=0.5),
        "cdpruner-recycle": lambda: tp.Recycle(tp.CDPruner(0.5), slots=2),
        "dart": lambda: tp.DART(0.5),
    }[pruner_factory]
    with tp.apply(model, make()) as run:
        together = generate(model, inputs, spec.steps)
        records = list(run.stats)
        for b in range(2):
            alone = generate(model, spec.alone(model, inputs, b), spec.steps)
            assert torch.equal(alone[0, -spec.steps :], together[b, -spec.steps :])
    assert [(r.sample, r.group) for r in records] == [
        (b, g) for b, groups in enumerate(layout) for g in range(len(groups))
    ]
    for record in records:
        count, grid = layout[record.sample][record.group]
        assert record.tokens_before == count and 0 < record.tokens_after < count
        if pruner_factory == "downsample" and grid is not None:
            assert record.tokens_after == pooled_count(grid, 2)
        if pruner_factory in ("cdpruner-recycle", "dart"):
            assert record.tokens_after == tp.budget.resolve_budget(0.5, count)
    # CDPruner's counts differ between the batch's images; the tiny models' LLM attention is nearly
    # uniform, so FastV's mass share gives every image of a size the same count
    if pruner_factory in ("adaptive", "adaptive-recycle"):
        assert len({r.tokens_after for r in records}) > 1
