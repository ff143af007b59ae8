"""The models the demo runs: the bundled reference models (`tokenprune.zoo`) or a user's checkpoint."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Loaded:
    """A model with its processor (VLM) or tokenizer (LM); `name` says where it came from."""

    model: object
    processor: object
    name: str
    reference: bool = False  # a bundled toy model (tokenprune.zoo)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def depth(self) -> int:
        config = self.model.config
        return getattr(config, "text_config", config).num_hidden_layers


def load_checkpoint(id_or_path: str) -> tuple[str, Loaded]:
    """("vlm" | "lm", Loaded) for a local directory or hub id; ValueError with the reason if it fails."""
    id_or_path = (id_or_path or "").strip()
    if not id_or_path:
        raise ValueError("Enter a checkpoint: a local directory or a Hugging Face model id.")
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    from tokenprune.adapters.transformers import find_adapter

    try:
        config = AutoConfig.from_pretrained(id_or_path)
        if hasattr(config, "vision_config"):
            kind = "vlm"
            model = AutoModelForImageTextToText.from_pretrained(id_or_path, attn_implementation="sdpa")
            processor = AutoProcessor.from_pretrained(id_or_path)
        else:
            kind = "lm"
            model = AutoModelForCausalLM.from_pretrained(id_or_path, attn_implementation="sdpa")
            processor = AutoTokenizer.from_pretrained(id_or_path)
    except Exception as error:  # any loading failure (missing files, no network, bad config) is reported
        raise ValueError(f"Could not load {id_or_path!r}: {type(error).__name__}: {error}") from error
    find_adapter(model)  # TypeError naming the supported classes
    return kind, Loaded(model.eval(), processor, str(id_or_path))


def load_reference(name: str) -> Loaded:
    from tokenprune import zoo

    model, processor = zoo.load_vlm(name) if name == "toy-vlm" else zoo.load_lm(name)
    return Loaded(model, processor, name, reference=True)


class Demo:
    """The models the app runs, swapped by `load`; one request at a time uses them (hooks are per
    model instance, and timings from concurrent runs would be meaningless)."""

    def __init__(self, vlm: Loaded, lm: Loaded) -> None:
        self.vlm = vlm
        self.lm = lm
        self.lock = threading.Lock()

    def load(self, id_or_path: str) -> str:
        kind, loaded = load_checkpoint(id_or_path)
        with self.lock:
            setattr(self, kind, loaded)
        return f"Loaded {loaded.name} as the {'vision' if kind == 'vlm' else 'language'} model."

    def describe(self) -> str:
        return f"Vision model: **{self.vlm.name}** · language model: **{self.lm.name}**"

    def text_lm(self) -> Loaded | None:
        """The language model if it reads English (the toy LM only knows its retrieval vocabulary)."""
        return None if self.lm.reference else self.lm
