"""Reference models trained in this repository, so pruning can be measured without downloads.

`toy-vlm`: a `LlavaForConditionalGeneration` (CLIP tower + Llama) answering questions about
procedural scenes (see `scenes`); `toy-vlm-2`: the same architecture at 256 image tokens, on cluttered
scenes that separate pruners (see `scenes2`); `toy-lm`: a `LlamaForCausalLM` doing long-context key-value
retrieval (see `retrieval`). Both load with `from_pretrained(zoo.path(name))`.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS = Path(__file__).parent / "weights"
MODELS = ("toy-vlm", "toy-vlm-2", "toy-lm")


def path(name: str) -> Path:
    """Directory of a committed reference model."""
    if name not in MODELS:
        raise ValueError(f"unknown reference model {name!r}; available: {MODELS}")
    return WEIGHTS / name


def load_vlm(name: str = "toy-vlm"):
    """(model, processor) of a committed toy VLM ("toy-vlm" or "toy-vlm-2"), in eval mode."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(path(name)).eval()
    return model, AutoProcessor.from_pretrained(path(name))


def load_lm(name: str = "toy-lm"):
    """(model, tokenizer) of the committed toy retrieval LM, in eval mode."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(path(name)).eval()
    return model, AutoTokenizer.from_pretrained(path(name))
