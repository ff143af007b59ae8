"""The pruner registry: every name builds its method, depth-relative defaults, user registration."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import tokenprune as tp
from tokenprune import registry
from tokenprune.eval import harness
from tokenprune.pruners import Selection

STAGES = {
    "divprune": ("pre_llm", tp.DivPrune),
    "visionzip": ("pre_llm", tp.VisionZip),
    "fopru": ("pre_llm", tp.FoPru),
    "fastv": ("llm", tp.FastV),
    "feather": ("llm", tp.Feather),
    "random": ("pre_llm", tp.RandomPrune),
    "uniform": ("pre_llm", tp.UniformPrune),
    "lazyskip": ("llm", tp.LazySkip),
    "gemfilter": ("prefill", tp.GemFilter),
    "zerotprune": ("in_tower", tp.ZeroTPrune),
    "tome": ("in_tower", tp.ToMe),
    "cdpruner": ("pre_llm", tp.CDPruner),
    "cdpruner-two-sided": ("pre_llm", tp.CDPruner),
    "dart": ("llm", tp.DART),
    "downsample": ("pre_llm", tp.Downsample),
    "cdpruner-recycle": ("pre_llm", tp.Recycle),
    "divprune-recycle": ("pre_llm", tp.Recycle),
    "cdpruner-adaptive": ("pre_llm", tp.Adaptive),
    "fastv-adaptive": ("llm", tp.AdaptiveLayer),
    "cdpruner-relevance": ("pre_llm", tp.Adaptive),
    "cdpruner-two-sided-recycle": ("pre_llm", tp.Recycle),
    "cdpruner-relevance-recycle": ("pre_llm", tp.Recycle),
}


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made by a test are gone after it."""
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))


@pytest.mark.parametrize("name", list(STAGES))
@pytest.mark.parametrize("depth", [None, 4, 32])
def test_every_name_builds_its_method_at_its_stage(name, depth):
    stage, method = STAGES[name]
    entry = registry.pruner_entry(name)
    assert entry.stage == stage and entry.pruner is method
    pruner = registry.build(name, 0.25, depth)
    assert type(pruner) is method and pruner.stage == stage


def test_names_are_listed_in_registration_order_by_stage_and_tokens():
    assert registry.pruner_names() == tuple(STAGES)
    assert registry.pruner_names(drops="visual") == (
        "divprune",
        "visionzip",
        "fopru",
        "fastv",
        "feather",
        "random",
        "uniform",
        "zerotprune",
        "tome",
        "cdpruner",
        "cdpruner-two-sided",
        "dart",
        "downsample",
        "cdpruner-recycle",
        "divprune-recycle",
        "cdpruner-adaptive",
        "fastv-adaptive",
        "cdpruner-relevance",
        "cdpruner-two-sided-recycle",
        "cdpruner-relevance-recycle",
    )
    assert registry.pruner_names(drops="prompt") == ("lazyskip", "gemfilter")
    assert registry.pruner_names(stage="llm") == ("fastv", "feather", "lazyskip", "dart", "fastv-adaptive")
    assert registry.pruner_names(stage="prefill", drops="visual") == ()


def test_needs_are_read_from_the_class():
    assert registry.pruner_entry("visionzip").needs == {"attention", "keys", "pre_projection"}
    assert registry.pruner_entry("fopru").needs == {"attention"}
    assert registry.pruner_entry("divprune").needs == frozenset()
    assert registry.pruner_entry("fastv").needs == frozenset()
    assert registry.pruner_entry("cdpruner").needs == {"text"}


def test_methods_that_keep_at_most_their_budget_say_so():
    at_most = {name for name in registry.pruner_names() if not registry.pruner_entry(name).exact}
    assert at_most == {
        "downsample",
        "cdpruner-adaptive",
        "fastv-adaptive",
        "cdpruner-relevance",
        "cdpruner-relevance-recycle",
    }


def test_two_sided_cdpruner_weighs_relevance_more():
    assert registry.build("cdpruner-two-sided", 0.25) == tp.CDPruner(0.25, theta=0.8, two_sided=True)


def test_relevance_adaptive_spans_a_twentieth_of_the_image_to_its_budget():
    for budget in (0.25, 64, 3):
        pruner = registry.build("cdpruner-relevance", budget)
        assert (pruner.rule, pruner.target, pruner.min_tokens) == ("relevance", 0.7, 0.05)
        assert pruner.pruner == tp.CDPruner(budget, theta=0.8, two_sided=True)
    assert registry.build("cdpruner-relevance", 64).bounds(256) == (13, 64)
    assert registry.build("cdpruner-relevance-recycle", 64).pruner == registry.build("cdpruner-relevance", 64)
    assert registry.build("cdpruner-two-sided-recycle", 64).pruner == registry.build("cdpruner-two-sided", 64)
    assert registry.build("cdpruner-relevance", 0.02).bounds(256) == (5, 5)


@pytest.mark.parametrize("depth", [4, 16, 32])
def test_depth_relative_defaults(depth):
    assert registry.build("fastv", 0.25, depth).layer == min(2, depth - 1)
    quarter = max(1, depth // 4)
    assert registry.build("feather", 0.25, depth).layers_at == (quarter, max(quarter + 1, depth // 2))
    assert registry.build("gemfilter", 0.25, depth).filter_layer == max(1, round(0.4 * depth))
    # budget 0.1 is the default schedule; layers stay fractions of the depth
    assert registry.build("lazyskip", 0.1, depth).schedule == ((0.25, 0.5), (0.5, 0.25), (0.75, 0.1))
    assert registry.build("lazyskip", 0.2, depth).schedule == ((0.25, 1.0), (0.5, 0.5), (0.75, 0.2))


def test_depth_relative_defaults_on_known_depths():
    assert [registry.build("fastv", 0.5, d).layer for d in (2, 4, 16, 32)] == [1, 2, 2, 2]
    assert [registry.build("feather", 0.5, d).layers_at for d in (4, 16, 32)] == [(1, 2), (4, 8), (8, 16)]
    assert [registry.build("gemfilter", 0.5, d).filter_layer for d in (4, 16, 32)] == [2, 6, 13]


def test_without_a_depth_methods_keep_their_own_defaults_and_options_win():
    assert registry.build("fastv", 0.5).layer == tp.FastV(0.5).layer
    assert registry.build("feather", 0.5).layers_at == tp.Feather(0.5).layers_at
    assert registry.build("gemfilter", 0.5).filter_layer == tp.GemFilter(0.5).filter_layer
    assert registry.build("fastv", 0.5, 32, layer=5).layer == 5
    assert registry.build("random", 8, seed=3).seed == 3
    assert registry.build("lazyskip", 0.3, 16).budget == 0.3


def test_unknown_names_raise_listing_the_registered_ones():
    with pytest.raises(ValueError, match="unknown pruner 'magic'") as error:
        registry.build("magic", 0.5)
    assert ", ".join(STAGES) in str(error.value)
    with pytest.raises(ValueError, match="supported: divprune, visionzip, fopru, fastv, feather, random"):
        harness.visual_pruner("lazyskip", 0.5, 4)
    with pytest.raises(ValueError, match="supported: lazyskip, gemfilter"):
        harness.prompt_pruner("fastv", 0.5, 4)


@dataclass
class KeepFirst(tp.PreLLMPruner):
    """Keeps the first tokens: a method the registry does not ship."""

    offset: int = 0

    def select(self, tokens):
        return Selection(torch.arange(self.keep_count(len(tokens))))


@dataclass
class PromptFastV(tp.FastV):
    """FastV's ranking registered for prompt tokens."""


def test_registered_pruners_are_built_by_the_evaluation(isolated_registry):
    entry = registry.register_pruner("keepfirst", KeepFirst, defaults=lambda budget, depth: {"offset": depth})
    assert entry.stage == "pre_llm" and entry.drops == "visual"
    pruner = harness.visual_pruner("keepfirst", 0.5, 6)
    assert isinstance(pruner, KeepFirst) and pruner.budget == 0.5 and pruner.offset == 6
    registry.register_pruner(
        "promptfastv", PromptFastV, drops="prompt", defaults=lambda budget, depth: {"layer": 3}
    )
    assert harness.prompt_pruner("promptfastv", 0.5, 6).layer == 3
    assert registry.pruner_names(drops="prompt") == ("lazyskip", "gemfilter", "promptfastv")


@pytest.mark.parametrize(
    ("name", "pruner", "options", "error", "match"),
    [
        ("fastv", KeepFirst, {}, ValueError, "already registered"),
        ("KeepFirst", KeepFirst, {}, ValueError, "lowercase"),
        ("", KeepFirst, {}, ValueError, "lowercase"),
        ("keepfirst", tp.Pruner, {}, TypeError, "stage"),
        ("keepfirst", object, {}, TypeError, "Pruner subclass"),
        ("keepfirst", KeepFirst, {"drops": "images"}, ValueError, "drops"),
    ],
)
def test_bad_registrations_raise(isolated_registry, name, pruner, options, error, match):
    with pytest.raises(error, match=match):
        registry.register_pruner(name, pruner, **options)
    assert registry.pruner_names() == tuple(STAGES)


def test_a_name_registers_once(isolated_registry):
    registry.register_pruner("keepfirst", KeepFirst)
    with pytest.raises(ValueError, match="'keepfirst' is already registered"):
        registry.register_pruner("keepfirst", KeepFirst)
