"""The `tokenprune` entry of a vLLM model's hf_config: which method, which budget.

Set with `--hf-overrides '{"architectures": [...], "tokenprune": {"method": "divprune", "budget": 64}}'`
or `LLM(hf_overrides=...)`. Parsed once per process at startup, so a bad value stops the engine
before it serves anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tokenprune.budget import resolve_budget, validate_budget
from tokenprune.pruners import DivPrune, FoPru, PreLLMPruner, RandomPrune, UniformPrune, VisionZip

CONFIG_KEY = "tokenprune"

# VisionZip's contextual tokens are merged from the whole image, which the model could do, but the
# dominant-only variant is used because it keeps every kept row a real encoder output.
METHODS: dict[str, Callable[..., PreLLMPruner]] = {
    "divprune": DivPrune,
    "visionzip": lambda budget, **options: VisionZip(budget, contextual=0, **options),
    "fopru": FoPru,
    "uniform": UniformPrune,
    "random": RandomPrune,
}
IN_LLM_METHODS = ("fastv", "feather", "lazyskip")
KEYS = ("method", "budget", "options")


@dataclass(frozen=True)
class PruneConfig:
    method: str
    budget: int | float
    pruner: PreLLMPruner

    def keep_count(self, natural: int) -> int:
        """Embeddings per image: never more than the image has, so `budget >= natural` changes nothing."""
        return resolve_budget(self.budget, natural)


def parse_config(hf_config: object, family: str, supported: tuple[str, ...]) -> PruneConfig:
    """Read and validate `hf_config.tokenprune` for a model of `family` that supports `supported`."""
    raw = getattr(hf_config, CONFIG_KEY, None)
    if raw is None:
        raise ValueError(
            f"tokenprune: the {family} pruning architecture needs a '{CONFIG_KEY}' entry in hf_overrides, "
            f'e.g. {{"{CONFIG_KEY}": {{"method": "divprune", "budget": 64}}}}'
        )
    if not isinstance(raw, Mapping):
        raise TypeError(f"tokenprune: '{CONFIG_KEY}' must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ValueError(f"tokenprune: unknown keys {unknown} in '{CONFIG_KEY}'; allowed: {list(KEYS)}")
    method = raw.get("method")
    if not isinstance(method, str):
        raise TypeError(f"tokenprune: 'method' must be a string, one of {list(supported)}; got {method!r}")
    method = method.lower()
    if method in IN_LLM_METHODS:
        raise ValueError(
            f"tokenprune: '{method}' prunes inside the language model, which cannot run in vLLM's paged KV "
            "cache (every layer shares one block table and sequence length per request). Methods that "
            f"work in vLLM select before the language model: {', '.join(supported)}"
        )
    if method not in supported:
        hint = f" ('{method}' exists but is not supported for {family} in vLLM)" if method in METHODS else ""
        raise ValueError(
            f"tokenprune: unknown method {method!r} for {family}{hint}; supported: {', '.join(supported)}"
        )
    if "budget" not in raw:
        raise ValueError("tokenprune: 'budget' is required (tokens per image, or a fraction in (0, 1])")
    budget = validate_budget(raw["budget"])
    options = raw.get("options", {})
    if not isinstance(options, Mapping):
        raise TypeError(f"tokenprune: 'options' must be a JSON object, got {type(options).__name__}")
    try:
        pruner = METHODS[method](budget, **options)
    except TypeError as error:
        raise ValueError(f"tokenprune: bad options {dict(options)} for {method}: {error}") from error
    return PruneConfig(method, budget, pruner)
