"""The `tokenprune` entry of a vLLM model's hf_config: which method, which budget.

Set with `--hf-overrides '{"architectures": [...], "tokenprune": {"method": "divprune", "budget": 64}}'`
or `LLM(hf_overrides=...)`. Parsed at startup, so a bad value stops the engine before it serves
anything; later reads of the same config (one per image's placeholder count) reuse that parse.
"""

from __future__ import annotations

import copy
import logging
import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from tokenprune import registry
from tokenprune.budget import resolve_budget, validate_budget
from tokenprune.pruners import Downsample, PreLLMPruner, TowerPruner

CONFIG_KEY = "tokenprune"
# The methods every pruned architecture supports: they select before the language model.
METHODS = ("divprune", "visionzip", "fopru", "uniform", "random")
# LLaVA's fixed square grid also lets Downsample's pooled count be known before encoding; ZeroTPrune
# prunes inside LLaVA's CLIP tower, to the budget's count.
LLAVA_METHODS = (*METHODS, "downsample", "zerotprune")


def square_grid(tokens: int) -> tuple[int, ...]:
    """The grid of a LLaVA image's tokens: square when they make a square, else one row."""
    side = math.isqrt(tokens)
    return (side, side) if side * side == tokens else (tokens,)


# Options vLLM sets and users cannot. VisionZip's contextual tokens are merged from the whole image,
# which the model could do, but the dominant-only variant is used because it keeps every kept row a
# real encoder output.
FIXED_OPTIONS: dict[str, dict[str, object]] = {"visionzip": {"contextual": 0}}
KEYS = ("method", "budget", "options")

# A child of vLLM's logger, so messages reach vLLM's log handler.
logger = logging.getLogger("vllm.tokenprune")
_warned_full_budgets: set[tuple[str, int | float]] = set()


@dataclass(frozen=True)
class PruneConfig:
    method: str
    budget: int | float
    pruner: PreLLMPruner | TowerPruner

    def keep_count(self, natural: int) -> int:
        """Embeddings per image: never more than the image has, so `budget >= natural` changes nothing
        (logged once per process and budget, since it usually means a budget meant for larger images).
        Downsample's count follows from the grid, square_grid(natural) (LLaVA's)."""
        if isinstance(self.pruner, Downsample):
            return self.pruner.count((square_grid(natural),))
        keep = resolve_budget(self.budget, natural)
        full = self.budget >= natural if isinstance(self.budget, int) else self.budget == 1.0
        if full and natural > 0 and (self.method, self.budget) not in _warned_full_budgets:
            _warned_full_budgets.add((self.method, self.budget))
            logger.warning(
                "tokenprune: 'budget' %s keeps all %d tokens of an image, which is therefore not pruned "
                "(images of at most %s tokens pass through unpruned; logged once)",
                self.budget,
                natural,
                self.budget,
            )
        return keep

    @property
    def in_tower(self) -> bool:
        """Whether the method prunes inside the vision tower (read from the registry, not the pruner
        object, which tests may wrap)."""
        return registry.pruner_entry(self.method).stage == "in_tower"

    @property
    def needs_vision_attention(self) -> bool:
        return "attention" in self.pruner.needs


# Parses by config object. transformers configs compare by value and are unhashable, so entries are
# keyed by identity and dropped when their config is collected (before its id can be reused); a
# changed entry is parsed again.
_PARSED: dict[tuple[int, str, tuple[str, ...]], tuple[object, PruneConfig]] = {}


def parse_config(hf_config: object, family: str, supported: tuple[str, ...]) -> PruneConfig:
    """Read and validate `hf_config.tokenprune` for a model of `family` that supports `supported`."""
    raw = getattr(hf_config, CONFIG_KEY, None)
    key = (id(hf_config), family, tuple(supported))
    if key in _PARSED and _PARSED[key][0] == raw:
        return _PARSED[key][1]
    config = parse_entry(raw, family, supported)
    try:
        weakref.finalize(hf_config, _PARSED.pop, key, None)
    except TypeError:  # not weakly referenceable: its id could come back on another object
        return config
    _PARSED[key] = (copy.deepcopy(raw), config)
    return config


def parse_entry(raw: object, family: str, supported: tuple[str, ...] = METHODS) -> PruneConfig:
    """Validate a `tokenprune` entry; every error starts with "tokenprune:" and names the key."""
    if raw is None:
        raise ValueError(
            f"tokenprune: the {family} pruning architecture needs a '{CONFIG_KEY}' entry in hf_overrides, "
            f'e.g. {{"{CONFIG_KEY}": {{"method": "divprune", "budget": 64}}}}'
        )
    if not isinstance(raw, Mapping):
        raise TypeError(
            f"tokenprune: '{CONFIG_KEY}' in hf_overrides must be a JSON object, got {type(raw).__name__}"
        )
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ValueError(f"tokenprune: unknown keys {unknown} in '{CONFIG_KEY}'; allowed: {list(KEYS)}")
    method = raw.get("method")
    if not isinstance(method, str):
        raise TypeError(f"tokenprune: 'method' must be a string, one of {list(supported)}; got {method!r}")
    method = method.lower()
    if method in registry.pruner_names(stage="llm"):
        raise ValueError(
            f"tokenprune: 'method' {method!r} prunes inside the language model, which cannot run in vLLM's paged KV "
            "cache (every layer shares one block table and sequence length per request). Methods that "
            f"work in vLLM select before the language model: {', '.join(supported)}"
        )
    if method not in supported:
        hint = (
            f" ('{method}' exists but is not supported for {family} in vLLM)"
            if method in registry.pruner_names(stage="pre_llm") + registry.pruner_names(stage="in_tower")
            else ""
        )
        raise ValueError(
            f"tokenprune: unknown 'method' {method!r} for {family}{hint}; supported: {', '.join(supported)}"
        )
    if "budget" not in raw:
        raise ValueError("tokenprune: 'budget' is required (tokens per image, or a fraction in (0, 1])")
    budget = validate_budget(raw["budget"], name="tokenprune: 'budget'")
    options = raw.get("options", {})
    if not isinstance(options, Mapping):
        raise TypeError(f"tokenprune: 'options' must be a JSON object, got {type(options).__name__}")
    try:
        # depth named, so that an option called depth is refused as the pruner would refuse it
        pruner = registry.build(method, budget, depth=None, **FIXED_OPTIONS.get(method, {}), **options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"tokenprune: bad 'options' {dict(options)} for {method}: {error}") from error
    return PruneConfig(method, budget, pruner)
