"""In-tower pruning in the anyres families (LLaVA-NeXT's CLIP tower, LLaVA-OneVision's SigLIP tower):
full budget against the unpruned model, kept tokens against a masked unpruned tower, batches of
images with different crop counts, exact counts reaching the language model and their positions,
cached decoding, and the refused inputs."""

from __future__ import annotations

import sys

import pytest
import torch
from next_models import image_inputs, placeholder_groups, tiny_llava_next, tiny_llava_onevision, video_inputs
from test_contract import FAMILIES as CONTRACT
from test_contract import generate, greedy_without_cache
from test_tower import masked_reference

import tokenprune as tp
from tokenprune.adapters.transformers import compat
from tokenprune.pruners.views import SplitByArea

SIDE = 6  # patches per crop side
PATCHES = SIDE * SIDE


@pytest.fixture(scope="module")
def models():
    # anyres_max_4: no canvas of these images is resized (test_refused_inputs takes anyres_max_2)
    return {"next": tiny_llava_next(), "onevision": tiny_llava_onevision(aspect_ratio="anyres_max_4")}


# (height, width) per image, per prompt. The first two are canvases the model neither unpads nor
# resizes (1 x 2 and 2 x 2 crops of the image's own aspect ratio), so that every patch of every crop
# is a token of the image; OneVision's two-image prompt is base views only. UNPADDED has canvases
# the model unpads (crop patches outside the image never reach the language model).
EXACT = {"next": [[(40, 80)], [(84, 84)]], "onevision": [[(40, 80)], [(30, 50), (84, 84)]]}
UNPADDED = {"next": [[(84, 60)], [(30, 84), (84, 84)]], "onevision": [[(30, 84)], [(84, 60)]]}
FAMILIES = ("next", "onevision")
CONTRACT_NAMES = {"next": "llava_next", "onevision": "onevision_image"}


def encode(model, inputs):
    """The model's own image features (per image, packed with newlines) for `inputs`."""
    extra = {k: inputs[k] for k in ("batch_num_images",) if k in inputs}
    with torch.no_grad():
        output = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"], **extra)
    return list(output.pooler_output)


def crops_per_image(model, inputs) -> list[int]:
    modeling = sys.modules[type(model.model).__module__]
    config = model.config
    counts = inputs.get("batch_num_images", [1] * len(inputs["image_sizes"]))
    single = [int(n) == 1 for n in counts for _ in range(int(n))]
    return [
        modeling.image_size_to_num_patches(size, config.image_grid_pinpoints, config.vision_config.image_size)
        if one
        else 1
        for size, one in zip(inputs["image_sizes"].tolist(), single)
    ]


def crop_patches(model, inputs) -> list[torch.Tensor]:
    """Per image, the tower's (crop * PATCHES + patch) index of each of its tokens in the image's own
    order (newlines left out): the model's packing applied to the indices."""
    crops = crops_per_image(model, inputs)
    index = torch.arange(sum(crops) * PATCHES, dtype=torch.float32).view(sum(crops), PATCHES, 1)
    config = model.config
    extra = (
        {"vision_aspect_ratio": config.vision_aspect_ratio}
        if hasattr(config, "vision_aspect_ratio")
        else {"vision_feature_select_strategy": config.vision_feature_select_strategy}
    )
    packed, _ = model.model.pack_image_features(
        list(index.split(crops)), inputs["image_sizes"], image_newline=torch.tensor([-1.0]), **extra
    )
    return [p[p >= 0].long() for p in packed]


def by_image(records):
    """Records of one stage and layer, in image order (prompt order is encoding order here)."""
    return sorted(records, key=lambda r: (r.sample, r.group))


def llm_inputs(model):
    """A pre-hook on the language model that records its attention mask and position ids."""
    seen = {}

    def hook(module, args, kwargs):
        seen.update(mask=kwargs["attention_mask"], positions=kwargs["position_ids"])

    return seen, model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pruner", [tp.ZeroTPrune(1.0), tp.ToMe(1.0)], ids=["zerotprune", "tome"])
def test_full_budget_equals_unpruned(models, family, pruner):
    model = models[family]
    inputs = image_inputs(model, UNPADDED[family], seed=1)
    reference_features = encode(model, inputs)
    with torch.no_grad():
        reference = model(**inputs).logits
    with tp.apply(model, pruner) as run, torch.no_grad():
        features = encode(model, inputs)
        logits = model(**inputs).logits
    for got, expected in zip(features, reference_features):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(logits, reference, rtol=0, atol=0)
    groups = [count for per in placeholder_groups(model, inputs) for count, _ in per]
    last = max(r.layer for r in run.stats)
    assert [r.tokens_after for r in by_image(run.stats.for_stage("in_tower")) if r.layer == last] == groups


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("budget", [20, 0.25])
def test_kept_tokens_equal_masking_the_pruned_ones_out_as_keys(models, family, budget):
    model = models[family]
    inputs = image_inputs(model, EXACT[family], seed=2)
    with tp.apply(model, tp.ZeroTPrune(budget, layers=(0, 1))) as run:
        features = encode(model, inputs)
        model(**inputs)  # records come with the forward that reads the features
    patches = crop_patches(model, inputs)
    crops = sum(crops_per_image(model, inputs))
    records = run.stats.for_stage("in_tower")
    dropped = {}
    for layer in (0, 1):
        mask = torch.ones(crops * PATCHES, dtype=torch.bool)
        for record, index in zip(by_image(r for r in records if r.layer == layer), patches):
            mask[index[list(record.kept_indices)]] = False
        dropped[layer] = mask.view(crops, PATCHES)
    per_crop = tp.budget.resolve_budget(budget, PATCHES)
    assert bool(((~dropped[1]).sum(1) == per_crop).all())  # every crop keeps the budget

    def reference_features(model, pixel_values):
        return encode(model, {**inputs, "pixel_values": pixel_values})

    protected = int(family == "next")  # CLIP's [CLS]; SigLIP has none
    reference = masked_reference(model, inputs["pixel_values"], dropped, reference_features, protected)
    final = by_image(r for r in records if r.layer == 1)
    for got, expected, record in zip(features, reference, final):
        newline = (expected == model.model.image_newline).all(-1)
        kept = list(record.kept_indices)
        assert len(kept) == per_crop * len(expected[~newline]) // PATCHES
        torch.testing.assert_close(got[~newline][kept], expected[~newline][kept], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pruner", [tp.ZeroTPrune(0.5), tp.ToMe(12)], ids=["zerotprune", "tome"])
def test_each_prompt_of_a_padded_batch_is_pruned_as_alone(models, family, pruner):
    """Two prompts with different crop counts, left-padded: each is pruned as it would be alone."""
    from test_contract import next_alone

    model = models[family]
    inputs = image_inputs(model, UNPADDED[family], seed=3)
    with tp.apply(model, pruner) as run, torch.no_grad():
        together = model(**inputs).logits[:, -1]
    for b in range(2):
        with tp.apply(model, pruner) as alone_run, torch.no_grad():
            alone = model(**next_alone(model, inputs, b)).logits[:, -1]
        torch.testing.assert_close(alone[0], together[b], rtol=1e-4, atol=1e-4)
        ours = [(r.layer, r.kept_indices) for r in run.stats if r.sample == b]
        assert ours == [(r.layer, r.kept_indices) for r in alone_run.stats]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "pruner",
    [
        tp.ZeroTPrune(0.5),
        tp.ToMe(0.5),
        tp.compose(tp.ToMe(20), tp.DivPrune(9)),
        tp.compose(tp.ToMe(20), SplitByArea(tp.DivPrune(9))),
        tp.compose(tp.ZeroTPrune(18), tp.VisionZip(7)),
    ],
    ids=["zerotprune", "tome", "tome+divprune", "tome+splitbyarea", "zerotprune+visionzip"],
)
def test_the_language_model_receives_the_recorded_tokens_at_their_unpruned_positions(models, family, pruner):
    """Per image: tower steps chain (each step's input is the previous one's survivors), a composed
    pre-LLM stage keeps exactly its budget among the survivors, and the language model receives the
    text, every newline and exactly the last stage's kept tokens, at the position ids the unpruned
    prompt gives them (positions="keep")."""
    model = models[family]
    inputs = image_inputs(model, UNPADDED[family], seed=4)
    seen, hook = llm_inputs(model)
    try:
        with tp.apply(model, pruner) as run, torch.no_grad():
            model(**inputs)
    finally:
        hook.remove()
    pre = getattr(pruner, "stages", (pruner,))[-1]
    groups = [count for per in placeholder_groups(model, inputs) for count, _ in per]
    tower = by_image(r for r in run.stats.for_stage("in_tower"))
    layers = sorted({r.layer for r in tower})
    images = [
        [r for r in tower if (r.sample, r.group) == key]
        for key in dict.fromkeys((r.sample, r.group) for r in tower)
    ]
    finals = []
    for steps, count in zip(images, groups):
        assert [r.layer for r in steps] == layers and steps[0].tokens_before == count
        for earlier, later in zip(steps, steps[1:]):
            assert later.tokens_before == earlier.tokens_after
            assert set(later.kept_indices) <= set(earlier.kept_indices)
        finals.append(steps[-1])
    if isinstance(pre, tp.ToMe | tp.ZeroTPrune):
        kept = [r.kept_indices for r in finals]
    else:
        selected = by_image(run.stats.for_stage("pre_llm"))
        for record, final in zip(selected, finals):
            assert record.tokens_before == final.tokens_after and record.tokens_after == pre.budget
            assert set(record.kept_indices) <= set(final.kept_indices)
        kept = [r.kept_indices for r in selected]
    # the prompt positions that must reach the language model, and their unpruned position ids
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    reaching = mask.bool() & (ids != model.config.image_token_id)
    newline = model.model.image_newline
    features = encode(model, inputs)
    where = (ids == model.config.image_token_id).nonzero()
    image = iter(kept)
    for f, chunk in zip(features, where.split([len(f) for f in features])):
        b, positions = int(chunk[0, 0]), chunk[:, 1]
        lines = (f == newline).all(-1)
        reaching[b, positions[lines]] = True
        reaching[b, positions[~lines][list(next(image))]] = True
    unpruned = torch.arange(ids.shape[1]).expand_as(ids)  # the model's own ids without position_ids
    got_mask, got_positions = seen["mask"].bool(), seen["positions"]
    for b in range(len(ids)):
        assert got_positions[b][got_mask[b]].tolist() == unpruned[b][reaching[b]].tolist()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "pruner",
    [
        tp.compose(tp.ZeroTPrune(0.5), tp.UniformPrune(10)),
        tp.ToMe(0.5, positions="reindex"),
        tp.compose(tp.ToMe(20), tp.UniformPrune(12), tp.FastV(6, layer=2)),
    ],
    ids=["zerotprune+uniform-keep", "tome-reindex", "three-stages"],
)
def test_cached_generate_equals_recomputing_the_pruned_prompt(models, family, pruner):
    # a seed whose continuations hold neither the image token nor an early end of sequence, which
    # the recomputation would read as a placeholder / generate() as the end of the row
    model, name = models[family], CONTRACT_NAMES[family]
    inputs = image_inputs(model, UNPADDED[family], seed=2)
    with tp.apply(model, pruner):
        cached = generate(model, inputs, CONTRACT[name].steps)
        recomputed = greedy_without_cache(model, inputs, name)
    assert torch.equal(cached, recomputed)


def test_refused_inputs():
    model = tiny_llava_onevision()
    resized = image_inputs(model, [[(84, 84)]])  # 12 x 12 canvas, resized under anyres_max_2
    with tp.apply(model, tp.ZeroTPrune(0.5)), pytest.raises(ValueError, match="resizes its"):
        model(**resized)
    video = video_inputs(model, frames=2, batch=1)
    with tp.apply(model, tp.ToMe(0.5)), pytest.raises(ValueError, match="supports images"):
        model(**video)
    if compat.takes_encoder_outputs(model.model):  # images encoded before, without the pruner
        inputs = image_inputs(model, [[(40, 80)]])
        with torch.no_grad():
            output = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
        with tp.apply(model, tp.ZeroTPrune(0.5)), pytest.raises(ValueError, match="pass pixel values"):
            model(input_ids=inputs["input_ids"], mm_encoder_outputs={"image": output})
