"""What depends on the transformers release: the tested range (declared, guarded at run time), the
KV cache under either of its names, eager attention giving the SDPA result for every in-LLM
pruner, other attention implementations refused, and loud failures when a release changes how
the cache reaches the model."""

from __future__ import annotations

import copy
import inspect
import re
import warnings
from pathlib import Path

import pytest
import torch
from next_models import image_inputs, tiny_llava_next, tiny_llava_onevision
from qwen_models import qwen_inputs, tiny_qwen

import tokenprune as tp
from tiny_models import llava_inputs, padded_batch, tiny_causal_lm, tiny_llava
from tokenprune.adapters.transformers import compat

STEPS = 3
NEWEST_MINOR = "{}.{}".format(*compat.UPPER.split(".")[:1], int(compat.UPPER.split(".")[1]) - 1)


# family -> (model builder, padded two-sample inputs); each model has 4 decoder layers
FAMILIES = {
    "llava": (tiny_llava, lambda m: llava_inputs(m, [(3, 4), (1, 2)])),
    "llava_next": (tiny_llava_next, lambda m: image_inputs(m, [[(84, 60)], [(30, 84)]])),
    "onevision": (tiny_llava_onevision, lambda m: image_inputs(m, [[(84, 84)], [(40, 80)]])),
    "qwen2_vl": (
        lambda: tiny_qwen("qwen2_vl"),
        lambda m: qwen_inputs([[("image", 8, 12)], [("image", 4, 4)]]),
    ),
    "qwen2_5_vl": (
        lambda: tiny_qwen("qwen2_5_vl"),
        lambda m: qwen_inputs([[("image", 8, 12)], [("image", 4, 4)]], "qwen2_5_vl"),
    ),
    "qwen3_vl": (
        lambda: tiny_qwen("qwen3_vl"),
        lambda m: qwen_inputs([[("image", 8, 12)], [("image", 4, 4)]], "qwen3_vl"),
    ),
    "llama": (lambda: tiny_causal_lm("llama"), lambda m: padded_batch((30, 23))),
    "qwen3": (lambda: tiny_causal_lm("qwen3"), lambda m: padded_batch((30, 23))),
}
VISUAL_PRUNERS = {
    "fastv": lambda: tp.FastV(3),
    "feather": lambda: tp.Feather(3, layers_at=(1, 3)),
    "divprune+fastv": lambda: tp.compose(tp.DivPrune(4), tp.FastV(3)),
}
TEXT_PRUNERS = {
    "lazyskip": lambda: tp.LazySkip(schedule=((1, 0.6), (3, 0.3))),
    "gemfilter": lambda: tp.GemFilter(filter_layer=2, budget=10),
}
CASES = [
    (family, name)
    for family in FAMILIES
    for name in (TEXT_PRUNERS if family in ("llama", "qwen3") else VISUAL_PRUNERS)
] + [("llava", "gemfilter")]

_models: dict = {}


def model_for(family):
    if family not in _models:
        _models[family] = FAMILIES[family][0]()
    return _models[family]


def pruner_for(name):
    return {**VISUAL_PRUNERS, **TEXT_PRUNERS}[name]()


def generated_logits(model, inputs):
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=STEPS,
            min_new_tokens=STEPS,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return torch.stack(out.logits, dim=1)


@pytest.mark.parametrize(("family", "name"), CASES)
def test_eager_attention_gives_the_sdpa_result(family, name):
    """Prefill and cached decode of a padded batch: the same logits under eager attention."""
    model = model_for(family)
    inputs = FAMILIES[family][1](model)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with tp.apply(model, pruner_for(name)) as run:
        expected = generated_logits(model, inputs)
    with tp.apply(eager, pruner_for(name)) as eager_run:
        actual = generated_logits(eager, inputs)
    assert [r.kept_indices for r in eager_run.stats] == [r.kept_indices for r in run.stats]
    assert any(r.tokens_after < r.tokens_before for r in run.stats)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_switching_to_eager_after_apply_is_followed():
    model = copy.deepcopy(model_for("llava"))
    inputs = FAMILIES["llava"][1](model)
    with tp.apply(model, tp.FastV(3)):
        expected = generated_logits(model, inputs)
        model.set_attn_implementation("eager")
        actual = generated_logits(model, inputs)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def custom_attention(module, query, key, value, attention_mask, **kwargs):
    raise AssertionError("never reached: the pruner refuses this implementation")


@pytest.mark.parametrize("pruner", [tp.FastV(3), tp.LazySkip()], ids=["fastv", "lazyskip"])
def test_other_attention_implementations_are_refused(pruner):
    from transformers import AttentionInterface

    AttentionInterface.register("tokenprune_test_attention", custom_attention)
    model = tiny_llava() if isinstance(pruner, tp.FastV) else tiny_causal_lm("llama")
    model.set_attn_implementation("tokenprune_test_attention")
    with pytest.raises(ValueError, match=r"attn_implementation 'sdpa' or 'eager'.*tokenprune_test_attention"):
        tp.apply(model, pruner)
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_implementation_switched_to_an_unsupported_one_is_refused_at_the_next_prefill():
    from transformers import AttentionInterface

    AttentionInterface.register("tokenprune_test_attention", custom_attention)
    model = tiny_causal_lm("llama")
    with tp.apply(model, tp.LazySkip()):
        model.set_attn_implementation("tokenprune_test_attention")
        with pytest.raises(ValueError, match="sdpa"):
            generated_logits(model, padded_batch((30, 23)))


def accepted_cache_names(model):
    parameters = inspect.signature(type(model).forward).parameters
    return [name for name in compat.CACHE_NAMES if name in parameters] + ["past_key_values"]


@pytest.mark.parametrize("family", ["llava", "llama"])
def test_manual_decoding_with_the_cache_under_each_accepted_name(family):
    """A user's own decoding loop passes the cache under the old or the new name: same logits as generate()."""
    model = model_for(family)
    inputs = FAMILIES[family][1](model)
    pruner = (
        tp.LazySkip(schedule=((1, 0.5),)) if family == "llama" else tp.compose(tp.DivPrune(4), tp.FastV(3))
    )
    with tp.apply(model, pruner):
        expected = generated_logits(model, inputs)
        for name in dict.fromkeys(accepted_cache_names(model)):
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # the old name is deprecated from 5.24
                out = model(**inputs, use_cache=True)
                steps, mask = [out.logits[:, -1]], inputs["attention_mask"]
                for _ in range(STEPS - 1):
                    mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
                    token = steps[-1].argmax(-1, keepdim=True)
                    out = model(
                        input_ids=token, attention_mask=mask, use_cache=True, **{name: compat.cache_out(out)}
                    )
                    steps.append(out.logits[:, -1])
            torch.testing.assert_close(torch.stack(steps, dim=1), expected, rtol=0, atol=1e-5, msg=name)


def test_a_cache_that_disagrees_with_the_pruned_prefill_raises():
    model = model_for("llama")
    inputs = padded_batch((30, 23))
    with tp.apply(model, tp.LazySkip(schedule=((2, 0.5),))), torch.no_grad():
        out = model(**inputs, use_cache=True)
        cache = compat.cache_out(out)
        layer = cache.layers[3]
        layer.keys, layer.values = layer.keys[:, :, 1:], layer.values[:, :, 1:]
        mask = torch.cat([inputs["attention_mask"], torch.ones(2, 1, dtype=torch.long)], dim=1)
        with pytest.raises(RuntimeError, match=r"tokenprune: decoder layer 3 caches .*transformers release"):
            model(input_ids=out.logits[:, -1:].argmax(-1), attention_mask=mask, past_key_values=cache)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "llama"])
def test_a_cache_under_a_name_tokenprune_does_not_read_raises(family, monkeypatch):
    """What a future rename of the cache argument looks like: the step must not pass for a prefill."""
    model = model_for(family)
    inputs = FAMILIES[family][1](model)
    pruner = tp.GemFilter(filter_layer=2, budget=10) if family == "llama" else tp.DivPrune(4)
    with tp.apply(model, pruner), torch.no_grad():
        out = model(**inputs, use_cache=True)
        cache = compat.cache_out(out)
        mask = torch.cat([inputs["attention_mask"], torch.ones(2, 1, dtype=torch.long)], dim=1)
        monkeypatch.setattr(compat, "CACHE_NAMES", ("renamed_cache",))
        with pytest.raises(RuntimeError, match="tokenprune: a decoding step passed the pruned cache"):
            model(input_ids=out.logits[:, -1:].argmax(-1), attention_mask=mask, past_key_values=cache)


def test_declared_range_is_the_one_guarded():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert re.findall(r'"(transformers\b[^"]*)"', pyproject) == [
        f"transformers>={compat.LOWER},<{compat.UPPER}"
    ]
    installed = compat.installed_version()
    assert compat.in_tested_range(installed), (
        f"transformers {installed} is outside the tested range: move it (docs/versions.md) once the suite passes"
    )


@pytest.mark.parametrize(
    ("version", "tested"),
    [
        (f"{compat.LOWER}.0", True),
        (f"{compat.LOWER}.3", True),
        (f"{NEWEST_MINOR}.0", True),
        (f"{NEWEST_MINOR}.2", True),
        (f"{compat.UPPER}.0", False),
        (f"{compat.UPPER}.0.dev0", False),
        ("5.15.2", False),
        ("6.0.0", False),
        ("4.57.1", False),
    ],
)
def test_tested_range_boundaries(version, tested):
    assert compat.in_tested_range(version) is tested


def test_apply_warns_once_outside_the_tested_range(monkeypatch):
    monkeypatch.setattr(compat, "installed_version", lambda: "9.1.0")
    compat.warn_if_untested.cache_clear()
    model = model_for("llama")
    try:
        with pytest.warns(RuntimeWarning) as caught:
            for _ in range(3):
                tp.apply(model, tp.LazySkip()).remove()
    finally:
        compat.warn_if_untested.cache_clear()
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f">={compat.LOWER},<{compat.UPPER}" in message and "9.1.0" in message
    assert caught[0].filename == __file__


def test_apply_is_silent_inside_the_tested_range():
    compat.warn_if_untested.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        tp.apply(model_for("llama"), tp.LazySkip()).remove()
