"""The pruners known by name: one entry per method, read by the evaluation harness, its CLI, the demo
and the vLLM plugin. `register_pruner` adds your own; `build` makes one from its name and a budget.

    from tokenprune.registry import build, register_pruner

    register_pruner("mine", MyPruner)
    build("mine", 0.25)
    build("fastv", 0.25, depth=16)   # FastV's layer chosen for a 16-layer language model
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal

from tokenprune.compose import STAGE_ORDER
from tokenprune.pruners import (
    DivPrune,
    FastV,
    Feather,
    FoPru,
    GemFilter,
    LazySkip,
    Pruner,
    RandomPrune,
    ToMe,
    UniformPrune,
    VisionZip,
    ZeroTPrune,
)
from tokenprune.pruners.adaptive import Adaptive, AdaptiveLayer
from tokenprune.pruners.cdpruner import CDPruner
from tokenprune.pruners.dart import DART
from tokenprune.pruners.downsample import Downsample
from tokenprune.pruners.prefill import DEFAULT_SCHEDULE
from tokenprune.pruners.recycle import Recycle

Drops = Literal["visual", "prompt"]
DROPS = ("visual", "prompt")

# Options a method gets for a budget and a language-model depth (None: depth unknown), below any
# options given to `build`.
Defaults = Callable[[int | float, int | None], dict[str, object]]


def _no_defaults(budget: int | float, depth: int | None) -> dict[str, object]:
    return {}


@dataclass(frozen=True)
class PrunerEntry:
    """A registered method. drops: which tokens it is meant for, "visual" (images, videos) or
    "prompt" (text): both kinds of LayerPruner exist, and the stage alone does not tell them apart.
    exact: whether it keeps exactly its budget; False for methods that keep at most the budget, as
    many as each image's grid or scores call for."""

    name: str
    pruner: type[Pruner]
    drops: Drops = "visual"
    defaults: Defaults = _no_defaults
    exact: bool = True

    @property
    def stage(self) -> str:
        return self.pruner.stage

    @property
    def needs(self) -> frozenset[str]:
        """What a pre-LLM method needs from the vision side besides the features (PreLLMPruner.needs)."""
        return getattr(self.pruner, "needs", frozenset())


_ENTRIES: dict[str, PrunerEntry] = {}


def register_pruner(
    name: str,
    pruner: type[Pruner],
    *,
    drops: Drops = "visual",
    defaults: Defaults = _no_defaults,
    exact: bool = True,
) -> PrunerEntry:
    """Make `pruner` (a Pruner subclass) buildable as `name`, lowercase, once. `defaults(budget, depth)`
    gives the options `build` passes unless told otherwise, e.g. layers relative to the depth."""
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(f"a pruner name must be a non-empty lowercase string, got {name!r}")
    if name in _ENTRIES:
        raise ValueError(f"a pruner named {name!r} is already registered ({_ENTRIES[name].pruner.__name__})")
    if not (
        isinstance(pruner, type)
        and issubclass(pruner, Pruner)
        and getattr(pruner, "stage", None) in STAGE_ORDER
    ):
        raise TypeError(f"{name!r}: expected a Pruner subclass of a stage in {STAGE_ORDER}, got {pruner!r}")
    if drops not in DROPS:
        raise ValueError(f"{name!r}: drops must be one of {DROPS}, got {drops!r}")
    entry = PrunerEntry(name, pruner, drops, defaults, exact)
    _ENTRIES[name] = entry
    return entry


def pruner_names(*, stage: str | None = None, drops: Drops | None = None) -> tuple[str, ...]:
    """Registered names, in registration order, optionally only those of `stage` or for `drops`."""
    return tuple(
        name
        for name, entry in _ENTRIES.items()
        if (stage is None or entry.stage == stage) and (drops is None or entry.drops == drops)
    )


def pruner_entry(name: str) -> PrunerEntry:
    if name not in _ENTRIES:
        raise ValueError(f"unknown pruner {name!r}; registered: {', '.join(_ENTRIES)}")
    return _ENTRIES[name]


def build(name: str, budget: int | float, depth: int | None = None, **options) -> Pruner:
    """The pruner registered as `name`, keeping `budget`, for a language model of `depth` decoder
    layers (None: the method's own defaults); `options` override the registered defaults."""
    entry = pruner_entry(name)
    settings = {**entry.defaults(budget, depth), **options}
    if _takes_budget(entry.pruner):
        return entry.pruner(budget, **settings)
    return entry.pruner(**settings)


def _takes_budget(pruner: type[Pruner]) -> bool:
    # LazySkip derives its budget from its schedule: its defaults turn the budget into one
    return any(field.name == "budget" and field.init for field in fields(pruner))


# Depth-relative defaults. On 32 layers each gives the method's own default, which is what `build`
# uses when the depth is unknown.


def _fastv_layer(depth: int) -> int:
    return min(2, depth - 1)


def _feather_layers(depth: int) -> tuple[int, ...]:
    first = max(1, depth // 4)
    return (first, max(first + 1, depth // 2))


# fraction of the decoder depth GemFilter selects at (13 of 32 layers in the paper)
GEMFILTER_DEPTH = 0.4


def gemfilter_layer(depth: int) -> int:
    """GemFilter's default selection layer: 40 % of the depth (13 of 32, the paper's Llama layer)."""
    return max(1, round(GEMFILTER_DEPTH * depth))


def _lazyskip_defaults(budget: float, depth: int | None) -> dict[str, object]:
    """LazySkip's default schedule scaled so that its last stage keeps `budget` of the prompt; its
    layers are fractions of the depth already."""
    last = DEFAULT_SCHEDULE[-1][1]
    return {
        "schedule": tuple((at, round(min(1.0, keep * budget / last), 4)) for at, keep in DEFAULT_SCHEDULE)
    }


def _at_depth(option: str, of_depth: Callable[[int], object]) -> Defaults:
    def defaults(budget: int | float, depth: int | None) -> dict[str, object]:
        return {} if depth is None else {option: of_depth(depth)}

    return defaults


register_pruner("divprune", DivPrune)
register_pruner("visionzip", VisionZip)
register_pruner("fopru", FoPru)
register_pruner("fastv", FastV, defaults=_at_depth("layer", _fastv_layer))
register_pruner("feather", Feather, defaults=_at_depth("layers_at", _feather_layers))
register_pruner("random", RandomPrune)
register_pruner("uniform", UniformPrune)
register_pruner("lazyskip", LazySkip, drops="prompt", defaults=_lazyskip_defaults)
register_pruner("gemfilter", GemFilter, drops="prompt", defaults=_at_depth("filter_layer", gemfilter_layer))
register_pruner("zerotprune", ZeroTPrune)
register_pruner("tome", ToMe)


def _downsample_budget(budget: int | float, depth: int | None) -> dict[str, object]:
    return {"budget": budget}


def _wrapping(name: str) -> Defaults:
    """Defaults of a wrapper: the method registered as `name` at the budget and depth."""

    def defaults(budget: int | float, depth: int | None) -> dict[str, object]:
        return {"pruner": build(name, budget, depth)}

    return defaults


register_pruner("cdpruner", CDPruner)


def _two_sided(budget: int | float, depth: int | None) -> dict[str, object]:
    """CDPruner with relevance measured on both sides of the image's median similarity, weighted more
    than diversity (theta 0.8)."""
    return {"theta": 0.8, "two_sided": True}


register_pruner("cdpruner-two-sided", CDPruner, defaults=_two_sided)
register_pruner("dart", DART, defaults=_at_depth("layer", _fastv_layer))
register_pruner("downsample", Downsample, defaults=_downsample_budget, exact=False)
register_pruner("cdpruner-recycle", Recycle, defaults=_wrapping("cdpruner"))
register_pruner("divprune-recycle", Recycle, defaults=_wrapping("divprune"))
register_pruner("cdpruner-adaptive", Adaptive, defaults=_wrapping("cdpruner"), exact=False)
register_pruner("fastv-adaptive", AdaptiveLayer, defaults=_wrapping("fastv"), exact=False)


# the fewest tokens `cdpruner-relevance` keeps: a twentieth of the image (or its budget, if smaller)
RELEVANCE_FLOOR = 0.05


def _relevance_share(budget: int | float, depth: int | None) -> dict[str, object]:
    """Adaptive(two-sided CDPruner) by relevance to the instruction, between a twentieth of the image
    and the budget."""
    return {
        **_wrapping("cdpruner-two-sided")(budget, depth),
        "rule": "relevance",
        "target": 0.7,
        "min_tokens": RELEVANCE_FLOOR,
    }


register_pruner("cdpruner-relevance", Adaptive, defaults=_relevance_share, exact=False)
register_pruner("cdpruner-two-sided-recycle", Recycle, defaults=_wrapping("cdpruner-two-sided"))
register_pruner("cdpruner-relevance-recycle", Recycle, defaults=_wrapping("cdpruner-relevance"), exact=False)
