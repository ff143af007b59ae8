"""Every detail of the transformers API that changed across the supported releases, in one place.

The adapters read the KV cache, the attention implementation, model outputs and what multimodal
models' feature getters return only through these helpers, so supporting a new release means
editing this module (and the tested range).
"""

from __future__ import annotations

import inspect
import warnings
from functools import cache

import torch

# The releases `make test` proves: the oldest is tested by the adapter suite in a second
# environment, the newest by the whole suite. UPPER is the first release nobody has tested.
LOWER = "5.17"
UPPER = "5.25"

# transformers 5.24 renamed `past_key_values` to `cache` in forwards and outputs; callers (and
# generate() before 5.24) may still pass the old name.
CACHE_NAMES = ("cache", "past_key_values")

# Layer masks the in-LLM engine builds: SDPA takes booleans (None: plain causal), eager adds the
# mask to the scores, so it needs an additive float mask and a causal one even without padding.
MASK_IMPLEMENTATIONS = ("sdpa", "eager")


def takes_encoder_outputs(model: torch.nn.Module) -> bool:
    """Whether a multimodal model's forward takes encodings as `mm_encoder_outputs` (transformers 5.18+,
    where generate() encodes before prefill); before, it only took pixels and encoded them itself."""
    return "mm_encoder_outputs" in inspect.signature(model.forward).parameters


def deepstack_features(output) -> list[torch.Tensor]:
    """Qwen3-VL's DeepStack features of one `get_image_features` / `get_video_features` call: per
    level, one (tokens, D) tensor of all its items. transformers 5.18+ split each level per item (a
    tuple, as `pooler_output`); 5.17 returned it whole."""
    return [f if isinstance(f, torch.Tensor) else torch.cat(f) for f in output.deepstack_features]


def video_features_with_newline(model: torch.nn.Module, output) -> torch.Tensor:
    """LLaVA-OneVision's (videos, L, D) video features ending with the `image_newline` token the model
    places after each video: `get_video_features` appends it in transformers 5.18+; in 5.17 the
    forward did, after the call."""
    features = output.pooler_output
    if takes_encoder_outputs(model):  # both arrived in 5.18
        return features
    newline = model.image_newline.to(features.device, features.dtype)
    return torch.cat((features, newline.expand(features.shape[0], 1, -1)), dim=1)


def installed_version() -> str:
    import transformers

    return transformers.__version__


def in_tested_range(version: str) -> bool:
    from packaging.version import Version

    release = Version(version).release
    return Version(LOWER).release <= release[:2] < Version(UPPER).release


@cache
def warn_if_untested(version: str) -> None:
    """Warn once per process (and version) when transformers lies outside the tested range."""
    if not in_tested_range(version):
        warnings.warn(
            f"tokenprune is tested with transformers >={LOWER},<{UPPER}; transformers {version} is "
            "installed, and pruning may fail or give wrong results with it",
            RuntimeWarning,
            stacklevel=3,
        )


def cache_in(kwargs: dict):
    """The KV cache passed to a forward (None when there is none)."""
    for name in CACHE_NAMES:
        value = kwargs.get(name)
        if value is not None:
            return value
    return None


def cached_length(kwargs: dict) -> int:
    """Tokens already in the cache passed to a forward (0 at prefill)."""
    cache_obj = cache_in(kwargs)
    return cache_obj.get_seq_length() if cache_obj is not None else 0


def cache_out(output):
    """The KV cache a model output carries."""
    for name in CACHE_NAMES:
        value = getattr(output, name, None)
        if value is not None:
            return value
    return None


def without_cache(kwargs: dict) -> dict:
    """Forward kwargs for a run that neither reads nor writes a cache."""
    return {**{k: v for k, v in kwargs.items() if k not in CACHE_NAMES}, "use_cache": False}


def check_cache_read(kwargs: dict, recorded) -> None:
    """Raise when a forward carries `recorded`, a cache filled by a pruned prefill, under a name that
    `cache_in` does not read: the step would otherwise pass for a new prefill and run unpruned."""
    if (
        recorded is not None
        and cache_in(kwargs) is not recorded
        and any(v is recorded for v in kwargs.values())
        and recorded.get_seq_length() > 0
    ):
        raise bookkeeping_error(
            "a decoding step passed the pruned cache under a name tokenprune does not read"
        )


def attention_implementation(attention: torch.nn.Module) -> str:
    """The attention function an attention module runs (its config says; it may change after loading)."""
    return attention.config._attn_implementation or "eager"


def check_mask_implementation(attention: torch.nn.Module, pruner_name: str) -> str:
    implementation = attention_implementation(attention)
    if implementation not in MASK_IMPLEMENTATIONS:
        raise ValueError(
            f"{pruner_name} prunes inside the language model and supports attn_implementation "
            f"{' or '.join(repr(i) for i in MASK_IMPLEMENTATIONS)}; this model runs {implementation!r}. "
            'Load it with attn_implementation="sdpa" or call model.set_attn_implementation("sdpa")'
        )
    return implementation


def layer_mask(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """The attention mask a layer of `implementation` takes, from a boolean (B, 1, Q, K) `allowed`."""
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def bookkeeping_error(detail: str) -> RuntimeError:
    return RuntimeError(
        f"tokenprune: {detail}. The model's cache no longer matches what the pruner recorded at prefill; "
        f"this transformers release ({installed_version()}) likely changed how it passes the cache "
        f"(tested: >={LOWER},<{UPPER})"
    )
