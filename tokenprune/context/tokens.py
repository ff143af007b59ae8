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
    return len(_WORD_OR_PUNCT.findall(text))


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of a string; built from whatever tokenizer the caller has."""

    count: Callable[[str], int]
    name: str
    # One call for many texts (pricing blocks or sentences): per-call overhead dominates on small texts.
    count_batch: Callable[[list[str]], list[int]] | None = None

    def __call__(self, text: str) -> int:
        return self.count(text)

    def many(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return list(self.count_batch(texts)) if self.count_batch else [self.count(text) for text in texts]


def _from_path(path: Path) -> TokenCounter:
    if path.is_file():
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception for unreadable files
            raise ValueError(f"cannot load tokenizer file {str(path)!r}: {error}") from error
        return _from_object(tokenizer, name=str(path))
    if path.is_dir():
        has_json = (path / "tokenizer.json").is_file()
        if has_json and not (path / "tokenizer_config.json").is_file():
            return _from_path(path / "tokenizer.json")
        if not any(
            (path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "config.json")
        ):
            raise ValueError(
                f"no tokenizer in directory {str(path)!r} (no tokenizer.json, tokenizer_config.json or config.json)"
            )
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, ImportError) as error:
            raise ValueError(f"cannot load a tokenizer from {str(path)!r}: {error}") from error
        return _from_object(tokenizer, name=str(path))
    raise ValueError(
        f"tokenizer path {str(path)!r} does not exist (expected a tokenizer.json or a directory)"
    )


def _counting_copy(backend: Any) -> Any:
    """A private copy of a Rust tokenizer that neither truncates nor pads (a tokenizer.json often
    enables both, which would cap or inflate counts), so counting never changes the caller's object."""
    from tokenizers import Tokenizer

    copied = Tokenizer.from_str(backend.to_str())
    copied.no_truncation()
    copied.no_padding()
    copied.encode_special_tokens = backend.encode_special_tokens
    return copied


def _rust_counts(backend: Any) -> Callable[[list[str]], list[int]]:
    # encode_batch_fast skips character offsets, which counting does not need.
    return lambda texts: [len(e.ids) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]


def _from_object(tokenizer: Any, name: str) -> TokenCounter:
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        counts = _rust_counts(_counting_copy(tokenizer))
        return TokenCounter(lambda text: counts([text])[0], name, counts)
    # Hugging Face tokenizers (slow or fast): special tokens belong to the prompt, not to the context.
    # The exact count goes through the tokenizer's own API; a fast tokenizer prices many units at once
    # with its Rust backend, as the tokenizer itself does (without its per-call Python overhead).
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(backend, Tokenizer):
        copied = _counting_copy(backend)
        # What the tokenizer sets on its backend for every call.
        copied.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
        batch = _rust_counts(copied)
    elif callable(tokenizer):
        batch = lambda texts: [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]  # noqa: E731
    else:
        batch = None
    return TokenCounter(lambda text: len(tokenizer.encode(text, add_special_tokens=False)), name, batch)


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
