"""Token counting with the tokenizer the downstream model uses, so budgets are exact for it."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_WORD_OR_PUNCT = re.compile(r"\w+|[^\w\s]")


def count_words_and_punctuation(text: str) -> int:
    """Default counter when no tokenizer is given: one token per word or punctuation mark."""
    return sum(1 for _ in _WORD_OR_PUNCT.finditer(text))


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of a string; built from whatever tokenizer the caller has."""

    count: Callable[[str], int]
    name: str

    def __call__(self, text: str) -> int:
        return self.count(text)


def _from_path(path: Path) -> TokenCounter:
    if path.is_file():
        from tokenizers import Tokenizer

        return _from_object(Tokenizer.from_file(str(path)), name=str(path))
    if path.is_dir():
        if (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
            return _from_path(path / "tokenizer.json")
        from transformers import AutoTokenizer

        return _from_object(AutoTokenizer.from_pretrained(str(path), local_files_only=True), name=str(path))
    raise ValueError(
        f"tokenizer path {str(path)!r} does not exist (expected a tokenizer.json or a directory)"
    )


def _from_object(tokenizer: Any, name: str) -> TokenCounter:
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):  # the Rust tokenizer returns an Encoding, not a list of ids
        return TokenCounter(lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids), name)
    # Hugging Face tokenizers (slow or fast): special tokens belong to the prompt, not to the context.
    return TokenCounter(lambda text: len(tokenizer.encode(text, add_special_tokens=False)), name)


def _checked(count: Callable[[str], Any]) -> Callable[[str], int]:
    def checked(text: str) -> int:
        value = count(text)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TypeError(f"token counter must return a non-negative int, got {value!r}")
        return value

    return checked


def token_counter(tokenizer: Any = None) -> TokenCounter:
    """Build a counter from a HF/`tokenizers` tokenizer, a local tokenizer path, or a callable str -> int.

    ``None`` counts words and punctuation marks, an approximation for when no tokenizer is at hand.
    """
    if tokenizer is None:
        return TokenCounter(count_words_and_punctuation, "words+punctuation")
    if isinstance(tokenizer, TokenCounter):
        return tokenizer
    if isinstance(tokenizer, (str, os.PathLike)):
        return _from_path(Path(tokenizer))
    if hasattr(tokenizer, "encode"):
        return _from_object(tokenizer, name=type(tokenizer).__name__)
    if callable(tokenizer):
        return TokenCounter(_checked(tokenizer), getattr(tokenizer, "__name__", type(tokenizer).__name__))
    raise TypeError(
        "tokenizer must be a Hugging Face or `tokenizers` tokenizer, a local tokenizer path, "
        f"a callable str -> int, or None; got {type(tokenizer).__name__}"
    )
