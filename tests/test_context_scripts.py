"""Scoring in scripts written without spaces, and line structure of pruned text."""

import numpy as np
import pytest
from _context_fixtures import bpe_count
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenprune.context import BM25Scorer, EmbeddingScorer, PassagePruner
from tokenprune.context.scorers import lexical_terms
from tokenprune.context.text import join_sentences, sentence_spans


@pytest.mark.parametrize(
    ("query", "texts"),
    [
        ("東京 人口", ["東京都の人口は約千四百万人です。", "大阪は第二の都市です。"]),  # Japanese
        ("北京 人口", ["北京的人口超过两千万。", "上海是一个港口城市。"]),  # Chinese
        ("서울 인구", ["서울의 인구는 약 천만 명이다.", "부산은 큰 항구 도시이다."]),  # Korean (particles)
        ("猫", ["黒猫が庭にいる。", "犬が好きです。"]),  # a one-character word
    ],
)
def test_bm25_finds_words_in_unsegmented_text(query, texts):
    relevance = BM25Scorer().relevance(query, texts)
    assert relevance[0] == 1.0 and relevance[1] < 0.1


@pytest.mark.parametrize("text", ["The cat sat on the mat.", "Ünïcödé wörds, ÆØÅ & Ελληνικά", "", "  a\nb  "])
def test_lexical_terms_leave_other_scripts_alone(text):
    assert lexical_terms(text) == text


class TruncatingCharacterEncoder:
    """Stand-in for a sentence-transformers model that reads only its first 64 characters."""

    keywords = ("火山", "雨")

    def encode(self, texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True):
        vectors = np.array([[float(k in text[:64]) for k in self.keywords] for text in texts])
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def test_embedding_windows_cut_unsegmented_text():
    texts = ["雨" * 300 + "火山", "雨" * 10]
    windowed = EmbeddingScorer(model=TruncatingCharacterEncoder()).relevance("火山", texts)
    np.testing.assert_allclose(windowed, [2**-0.5, 0.0])  # its last window holds rain and the volcano
    whole = EmbeddingScorer(model=TruncatingCharacterEncoder(), window_words=10**6).relevance("火山", texts)
    np.testing.assert_allclose(whole, [0.0, 0.0])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab .!\n\t-#東。")), max_size=80))
def test_all_sentences_joined_keep_the_text_and_its_line_breaks(text):
    spans = sentence_spans(text)
    joined = join_sentences(text, spans, list(range(len(spans))))
    assert joined.split() == text.split()
    assert joined.count("\n") == text.strip().count("\n")


def test_passages_keep_their_lines():
    notes = "# Trip\n\nWe left at dawn.\n\n- pack water\n- pack maps\n  - paper maps\n\nThe end."
    pruner = PassagePruner(budget=200, threshold=0.0, tokenizer=bpe_count, keep_titles=False)
    assert pruner.prune("maps", [notes]).text == notes
    pruned = PassagePruner(budget=200, threshold=0.5, tokenizer=bpe_count).prune("maps water", [notes])
    assert pruned.text == "- pack water\n- pack maps\n  - paper maps"
