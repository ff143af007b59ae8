"""Shared helpers for the context and LangChain tests: offline tokenizers and sample pages."""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "article-extraction-benchmark"

ARTICLE = """<!DOCTYPE html>
<html><head><title>Volcano report</title><meta charset="utf-8"><script>track()</script>
<style>body { color: red }</style></head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/news">News</a></li><li><a href="/sport">Sport</a></li></ul></nav>
<div class="wrap"><div><article>
<h1>Etna erupts again</h1>
<p>Mount Etna, the tallest active volcano in Europe, erupted on Sunday night. Lava fountains reached
800 metres and ash closed Catania airport for six hours.</p>
<p>Scientists at the national institute of volcanology said the eruption was expected. The volcano has been
restless since February, with weekly paroxysms.</p>
<table><tr><th>Date</th><th>Event</th><th></th></tr><tr><td>12 March</td><td>Ash plume</td><td></td></tr></table>
<p>Local farmers welcomed the ash as fertiliser for vineyards on the slopes, where grapes for Etna Rosso grow.</p>
</article></div></div>
<footer><p>Copyright 2024 Example News. All rights reserved.</p><p>Contact us at desk@example.com</p></footer>
</body></html>"""


@functools.cache
def bpe_tokenizer():
    """A byte-level BPE trained in memory: a real `tokenizers.Tokenizer`, no hub."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<s>", "</s>"]
    )
    tokenizer.train_from_iterator([ARTICLE] * 3, trainer=trainer)
    return tokenizer


@functools.cache
def hf_tokenizer():
    """The same BPE behind the Hugging Face API (`PreTrainedTokenizerFast`)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=bpe_tokenizer(), bos_token="<s>", eos_token="</s>")


def whitespace_count(text: str) -> int:
    return len(text.split())


def bpe_count(text: str) -> int:
    return len(bpe_tokenizer().encode(text, add_special_tokens=False).ids)


def real_pages(limit: int | None = None) -> list[tuple[str, bytes, str]]:
    """(id, raw html, articleBody) of the benchmark pages; [] when the data is absent."""
    truth_file = DATA / "ground-truth.json"
    if not truth_file.is_file():
        return []
    truth = json.loads(truth_file.read_text())
    pages = []
    for key in sorted(truth)[:limit]:
        path = DATA / "html" / f"{key}.html.gz"
        if path.is_file():
            pages.append((key, gzip.decompress(path.read_bytes()), truth[key]["articleBody"]))
    return pages
