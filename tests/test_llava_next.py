"""LLaVA-NeXT and LLaVA-OneVision adapters (images, multi-image prompts, video): vision and in-LLM
scores against eager attention, budget split by area / per frame, errors, hook hygiene. The
contract every adapter keeps is in test_contract.py."""

from __future__ import annotations

import sys

import pytest
import torch
from next_models import image_inputs, tiny_llava_next, tiny_llava_onevision, video_inputs

import tokenprune as tp
from tokenprune.adapters.transformers import compat
from tokenprune.pruners.base import PreLLMPruner, Selection
from tokenprune.pruners.views import SplitByArea

SIDE = 6  # tower grid per crop
BUDGET = 8


@pytest.fixture(scope="module")
def next_model():
    return tiny_llava_next()


@pytest.fixture(scope="module")
def ov_model():
    return tiny_llava_onevision()


# (height, width) per image, per prompt: different crop grids and unpadding; the OneVision 84 x 84
# image's 12 x 12 canvas exceeds anyres_max_2 and is downsampled, its two-image prompt is base-only.
CASES = {
    "next": ("next_model", {1: [[(40, 80)]], 2: [[(84, 60)], [(30, 84), (84, 84)]]}),
    "onevision": ("ov_model", {1: [[(84, 84)]], 2: [[(84, 84), (30, 50)], [(40, 80)]]}),
    "onevision-video": ("ov_model", {1: 3, 2: 3}),
}


def make_inputs(request, family, batch):
    model = request.getfixturevalue(CASES[family][0])
    spec = CASES[family][1][batch]
    if family == "onevision-video":
        return model, video_inputs(model, frames=spec, batch=batch)
    return model, image_inputs(model, spec, seed=batch)


def forward(model, inputs, **extra):
    with torch.no_grad():
        return model(**inputs, **extra).logits


class Spy(PreLLMPruner):
    """Keeps everything and records what the adapter provided."""

    needs = frozenset({"attention", "keys", "pre_projection"})

    def __init__(self):
        super().__init__(1.0)
        self.seen = []

    def select(self, tokens):
        self.seen.append(tokens)
        return Selection(torch.arange(len(tokens)))


def eager_copy(model, family):
    build = tiny_llava_next if family == "next" else tiny_llava_onevision
    eager = build(attn="eager")
    eager.load_state_dict(model.state_dict())
    return eager


def eager_scores(eager, pixels, layer, has_cls):
    with torch.no_grad():
        attentions = eager.model.vision_tower(pixels, output_attentions=True).attentions[layer]
    if has_cls:
        return attentions[:, :, 0, 1:].sum(1)  # [CLS] row, summed over heads
    return attentions.mean(dim=(1, 2))  # attention received, mean over heads and queries


@pytest.mark.parametrize("family", ["next", "onevision"])
def test_image_vision_scores_match_eager_attention_in_the_models_layout(request, family):
    model, inputs = make_inputs(request, family, 2)
    eager = eager_copy(model, family)
    inner = model.model
    modeling = sys.modules[type(inner).__module__]
    config = model.config
    sizes = inputs["image_sizes"]
    single = [int(n) == 1 for n in inputs.get("batch_num_images", [1] * len(sizes)) for _ in range(int(n))]
    patches = [
        modeling.image_size_to_num_patches(s, config.image_grid_pinpoints, config.vision_config.image_size)
        if one
        else 1
        for s, one in zip(sizes, single)
    ]
    pixels = torch.cat([p[:n] for p, n in zip(inputs["pixel_values"], patches)])
    layer = 1 if family == "next" else 2  # vision_feature_layer -2 / -1 of a 3-layer tower
    scores = eager_scores(eager, pixels, layer, family == "next")[..., None]
    # the model's own packing lays the scores out like the features; NaN marks its newlines
    extra = (
        {"vision_aspect_ratio": config.vision_aspect_ratio}
        if family != "next"
        else {"vision_feature_select_strategy": "default"}
    )
    packed, _ = inner.pack_image_features(
        list(scores.split(patches)), sizes, image_newline=torch.tensor([float("nan")]), **extra
    )
    spy = Spy()
    with tp.apply(model, spy):
        forward(model, inputs)
    expected = [p[~p.isnan()] for p in packed]
    by_order = [t.attention for t in spy.seen]  # prompt order == encoding order for these inputs
    assert len(by_order) == len(expected)
    for got, want in zip(by_order, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # the base view comes first, in the tower's row-major order
    torch.testing.assert_close(by_order[0][: SIDE * SIDE], scores[0, :, 0], rtol=1e-4, atol=1e-6)


def test_video_vision_scores_match_eager_attention(request):
    model, inputs = make_inputs(request, "onevision-video", 2)
    eager = eager_copy(model, "onevision")
    pixels = inputs["pixel_values_videos"].flatten(0, 1)
    scores = eager_scores(eager, pixels, 2, has_cls=False)
    pooled = model.model.apply_pooling(scores[..., None]).reshape(2, -1)
    spy = Spy()
    with tp.apply(model, spy):
        forward(model, inputs)
    for got, want in zip(spy.seen, pooled):
        torch.testing.assert_close(got.attention, want, rtol=1e-4, atol=1e-6)
        assert got.grid == (3, 3, 3) and got.views == ((3, 3),) * 3


@pytest.mark.parametrize("family", ["next", "onevision-video"])
def test_fastv_keeps_the_top_of_eager_last_token_attention(request, family):
    model, inputs = make_inputs(request, family, 2)
    eager = eager_copy(model, "next" if family == "next" else "onevision")
    token = model.config.image_token_id if family == "next" else model.config.video_token_id
    with torch.no_grad():
        attentions = eager(**inputs, output_attentions=True).attentions[1]  # FastV(layer=2) scores layer 1
    with tp.apply(model, tp.FastV(BUDGET, layer=2)) as run:
        forward(model, inputs)
    newline = model.model.image_newline
    with torch.no_grad():
        embeds = model.model.get_input_embeddings()(inputs["input_ids"])
        feats = (
            model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
            if family == "next"
            else list(
                compat.video_features_with_newline(
                    model.model, model.model.get_video_features(inputs["pixel_values_videos"])
                )
            )
        )
    assert embeds is not None
    where = (inputs["input_ids"] == token).nonzero()
    records = iter(run.stats)
    for f, chunk in zip(feats, where.split([len(f) for f in feats])):
        b = int(chunk[0, 0])
        candidates = chunk[:, 1][~(f == newline).all(-1)]
        row = attentions[b, :, -1, candidates].mean(0)
        want = row.topk(BUDGET).indices.sort().values.tolist()
        record = next(records)
        assert record.sample == b and list(record.kept_indices) == want


def test_split_by_area_budgets_each_view(request):
    model, inputs = make_inputs(request, "next", 1)
    with tp.apply(model, SplitByArea(tp.UniformPrune(10))) as run:
        forward(model, inputs)
    record = run.stats[0]
    base = SIDE * SIDE
    canvas = record.tokens_before - base
    in_base = sum(i < base for i in record.kept_indices)
    assert record.tokens_after == 10 and record.method == "SplitByArea(UniformPrune)"
    assert in_base == round(10 * base / (base + canvas))


def test_split_by_area_on_video_is_a_per_frame_budget(request):
    model, inputs = make_inputs(request, "onevision-video", 1)
    with tp.apply(model, SplitByArea(tp.DivPrune(6))) as run:
        forward(model, inputs)
    frames = [i // 9 for i in run.stats[0].kept_indices]
    assert [frames.count(t) for t in range(3)] == [2, 2, 2]


def test_split_by_area_takes_pre_llm_pruners_only():
    with pytest.raises(TypeError, match="pre-LLM"):
        SplitByArea(tp.FastV(8))


def test_wrong_placeholder_count_raises_clear_error(request):
    model, inputs = make_inputs(request, "next", 1)
    ids = inputs["input_ids"].clone()
    ids[0, (ids[0] == model.config.image_token_id).nonzero()[0]] = 5
    with tp.apply(model, tp.DivPrune(BUDGET)), pytest.raises(ValueError, match="placeholder tokens"):
        forward(model, {**inputs, "input_ids": ids})


def test_pixel_values_without_image_sizes_raise_clear_error(request):
    model, inputs = make_inputs(request, "next", 1)
    inputs = {k: v for k, v in inputs.items() if k != "image_sizes"}
    with tp.apply(model, tp.FastV(BUDGET)), pytest.raises(ValueError, match="image_sizes"):
        forward(model, inputs)


def test_other_vision_feature_layer_is_refused(request):
    model, inputs = make_inputs(request, "next", 1)
    with tp.apply(model, tp.VisionZip(BUDGET)), pytest.raises(ValueError, match="vision_feature_layer"):
        forward(model, inputs, vision_feature_layer=-1)


def test_hooks_are_removed(request):
    model, inputs = make_inputs(request, "onevision", 1)
    reference = forward(model, inputs)

    def hooks():
        return [
            (name, list(m._forward_pre_hooks), list(m._forward_hooks)) for name, m in model.named_modules()
        ]

    before = hooks()
    with tp.apply(model, tp.compose(tp.VisionZip(BUDGET), tp.FastV(4))):
        forward(model, inputs)
        assert hooks() != before
    assert hooks() == before
    torch.testing.assert_close(forward(model, inputs), reference, rtol=0, atol=0)
