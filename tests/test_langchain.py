"""TokenPruneCompressor and HtmlCleaner with real langchain-core / langchain-classic objects."""

import asyncio

import pytest

pytest.importorskip("langchain_core")

from _context_fixtures import ARTICLE, bpe_count, hf_tokenizer  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_core.language_models.fake_chat_models import FakeListChatModel  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnablePassthrough  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from tokenprune.adapters.langchain import HtmlCleaner, TokenPruneCompressor, is_html, looks_like_html  # noqa: E402

TEXT_DOCS = [
    Document(
        page_content="Cats sleep up to sixteen hours a day. They hunt at dawn and dusk. Kittens sleep even more.",
        metadata={"source": "cats.txt", "tags": ["pets"], "title": "Cats"},
        id="cats",
    ),
    Document(
        page_content="The stock market closed higher on Friday. Bond yields were flat.",
        metadata={"source": "m"},
    ),
    Document(page_content=ARTICLE, metadata={"source": "etna.html", "content_type": "text/html"}),
    Document(
        page_content="Dogs need daily walks. Some breeds sleep twelve hours a day.",
        metadata={"source": "dogs.txt"},
    ),
]


def total_tokens(documents) -> int:
    return sum(bpe_count(document.page_content) for document in documents)


def test_compresses_mixed_documents_under_one_budget_keeping_order_and_metadata():
    originals = [document.model_copy(deep=True) for document in TEXT_DOCS]
    compressor = TokenPruneCompressor(budget=60, tokenizer=bpe_count)
    result = compressor.compress_documents(TEXT_DOCS, "How many hours a day do cats and dogs sleep?")
    assert [d.metadata["source"] for d in result] == ["cats.txt", "dogs.txt"]  # irrelevant ones dropped
    assert total_tokens(result) <= 60
    cats = result[0]
    assert cats.id == "cats" and cats.metadata["tags"] == ["pets"]
    assert cats.page_content.startswith("Cats\nCats sleep up to sixteen hours a day.")
    assert 0 < cats.metadata["relevance_score"] <= 1
    assert cats.metadata["tokenprune"]["format"] == "text"
    assert cats.metadata["tokenprune"]["tokens_after"] == bpe_count(cats.page_content)
    assert cats.metadata["tokenprune"]["kept"][0] == 0
    cats.metadata["tags"].append("mutated")
    assert originals == TEXT_DOCS  # inputs never mutated, metadata deep-copied


def test_html_documents_are_pruned_block_by_block():
    compressor = TokenPruneCompressor(budget=80, tokenizer=hf_tokenizer(), html_output="html")
    (result,) = compressor.compress_documents(TEXT_DOCS[2:3], "vineyards grapes fertiliser")
    assert "<p>Local farmers" in result.page_content and "<script>" not in result.page_content
    assert len(hf_tokenizer().encode(result.page_content, add_special_tokens=False)) <= 80
    assert result.metadata["tokenprune"]["format"] == "html"
    assert any(path.startswith("/html/body/") for path in result.metadata["tokenprune"]["kept"])


@pytest.mark.parametrize("budget", [1, 5, 17, 33, 80, 400])
def test_budget_is_exact_across_documents(budget):
    compressor = TokenPruneCompressor(budget=budget, tokenizer=bpe_count, threshold=0.0)
    assert total_tokens(compressor.compress_documents(TEXT_DOCS, "sleep hours lava")) <= budget


def test_budget_per_document():
    # The test BPE knows only the article's words: a short sentence of another text costs ~30 tokens.
    compressor = TokenPruneCompressor(budget=40, tokenizer=bpe_count, threshold=0.0, budget_per_document=True)
    result = compressor.compress_documents(TEXT_DOCS, "sleep hours lava")
    assert len(result) == 4 and total_tokens(result) > 40
    assert all(bpe_count(document.page_content) <= 40 for document in result)


def test_empty_input_and_empty_documents():
    compressor = TokenPruneCompressor(budget=50, tokenizer=bpe_count)
    assert compressor.compress_documents([], "q") == []
    assert compressor.compress_documents([Document(page_content="  ")], "q") == []


def test_near_duplicates_are_dropped():
    twin = Document(page_content=TEXT_DOCS[0].page_content + " ", metadata={"source": "copy"})
    compressor = TokenPruneCompressor(budget=200, tokenizer=bpe_count)
    result = compressor.compress_documents([TEXT_DOCS[0], twin], "cats sleep")
    assert [d.metadata["source"] for d in result] == ["cats.txt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": 0}, "greater than 0"),
        ({"budget": "100"}, "budget must be an int"),
        ({"budget": 10, "tokenizer": 3.5}, "tokenizer must be"),
        ({"budget": 10, "scorer": "tfidf"}, "scorer must be one of"),
        ({"budget": 10, "threshold": 2}, "less than or equal to 1"),
        ({"budget": 10, "colour": "red"}, "Extra inputs"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        TokenPruneCompressor(**kwargs)


def test_html_detection():
    assert is_html(Document(page_content="<!DOCTYPE html><p>x</p>"))
    assert is_html(Document(page_content="<div><p>a</p><p>b</p></div>"))
    assert not is_html(Document(page_content="plain text with a < sign"))
    assert not is_html(Document(page_content="<html>", metadata={"content_type": "text/plain"}))
    assert is_html(Document(page_content="x", metadata={"mime_type": "text/html; charset=utf-8"}))


@pytest.mark.parametrize(
    "text",
    [
        "<table><tr><td>Tokyo</td><td>14 million</td></tr><tr><td>Osaka</td><td>2.7 million</td></tr></table>",
        "<table><tr><td>Tokyo<td>14 million<tr><td>Osaka<td>2.7 million",  # end tags left out
        "<ul><li>one<li>two</ul>",
        "<p>First paragraph.<p>Second paragraph.<p>Third.",
        "  <span>a</span> <b>fragment</b> of <em>inline</em> markup",
    ],
)
def test_html_fragments_are_detected(text):
    assert is_html(Document(page_content=text))


@pytest.mark.parametrize(
    "text",
    [
        "Use <div> for blocks, <p> for paragraphs and <span> for inline text; a <div> nests.",
        "In HTML, <b>bold</b> makes text bold and <i>italic</i> slants it, as every guide says.",
        "# Notes\n\nA line break is written <br> and a rule <hr>; if a < b then b > a.",
    ],
)
def test_text_mentioning_tags_stays_text(text):
    assert not is_html(Document(page_content=text))
    compressor = TokenPruneCompressor(budget=500, tokenizer=bpe_count, threshold=0.0)
    (result,) = compressor.compress_documents([Document(page_content=text)], "tags")
    assert result.page_content == text and result.metadata["tokenprune"]["format"] == "text"


MARKUP_PIECES = ["<", ">", "/", "!", "[", "]", "-", "p", "td", " ", "\n", "x", "&#", "&#x110000;", "=", '"']
MARKUP_PIECES += [
    "<![CDATA[",
    "<![if ",
    "<![endif]",
    "<!--",
    "-->",
    "<!doctype",
    "<table>",
    "</td>",
    "<script>",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(MARKUP_PIECES), max_size=40).map("".join))
def test_html_detection_never_fails(text):
    assert looks_like_html(text) in (True, False)


def test_html_table_fragment_is_pruned_as_html():
    fragment = (
        "<table><tr><td>Tokyo</td><td>14 million</td></tr><tr><td>Osaka</td><td>2.7 million</td></tr></table>"
    )
    compressor = TokenPruneCompressor(budget=500, tokenizer=bpe_count, threshold=0.0)
    (result,) = compressor.compress_documents([Document(page_content=fragment)], "Tokyo")
    assert result.metadata["tokenprune"]["format"] == "html"
    assert "<td>" not in result.page_content and "| Tokyo | 14 million |" in result.page_content


class _Uncopyable:
    def __deepcopy__(self, memo):
        raise TypeError("cannot copy this")


def test_metadata_that_cannot_be_deep_copied_is_shared():
    import threading

    with open(__file__) as handle:
        lock, connection = threading.Lock(), _Uncopyable()
        metadata = {"lock": lock, "file": handle, "db": {"conn": connection}, "tags": ["a"], "source": "x"}
        document = Document(page_content="Cats sleep sixteen hours a day.", metadata=metadata)
        (result,) = TokenPruneCompressor(budget=50, tokenizer=bpe_count).compress_documents(
            [document], "cats"
        )
        (cleaned,) = HtmlCleaner(output="text").transform_documents([document])
    for copied in (result.metadata, cleaned.metadata):
        assert copied["lock"] is lock and copied["file"] is handle and copied["db"]["conn"] is connection
        assert copied["tags"] == ["a"] and copied["tags"] is not metadata["tags"]  # copyable: deep-copied
    assert set(metadata) == {"lock", "file", "db", "tags", "source"}  # input untouched
    assert metadata["tags"] == ["a"] and "relevance_score" not in metadata


MARKDOWN = """# Install

Run the installer. It takes a minute.

- first step
  - nested detail
- second step

```python
import tokenprune
```

## Usage

Call prune on a page."""


def test_text_documents_keep_their_line_structure():
    compressor = TokenPruneCompressor(budget=500, tokenizer=bpe_count, threshold=0.0)
    (result,) = compressor.compress_documents([Document(page_content=MARKDOWN)], "install")
    assert result.page_content == MARKDOWN
    (pruned,) = TokenPruneCompressor(budget=500, tokenizer=bpe_count, threshold=0.1).compress_documents(
        [Document(page_content=MARKDOWN)], "installer nested step"
    )
    # Dropped lines leave the breaks (and indentation) of the lines that stay.
    assert pruned.page_content == "Run the installer.\n\n- first step\n  - nested detail\n- second step"


def test_cjk_documents_are_scored():
    document = Document(page_content="東京都の人口は約千四百万人です。大阪は第二の都市です。")
    result = TokenPruneCompressor(budget=100).compress_documents([document], "東京 人口")
    assert [d.page_content for d in result] == ["東京都の人口は約千四百万人です。"]


def test_identical_html_documents_are_deduplicated():
    copy = Document(page_content=ARTICLE, metadata={"source": "mirror", "content_type": "text/html"})
    compressor = TokenPruneCompressor(budget=400, tokenizer=bpe_count, threshold=0.0)
    result = compressor.compress_documents([TEXT_DOCS[2], copy], "Etna eruption")
    assert [d.metadata["source"] for d in result] == ["etna.html"]


# --- in LangChain machinery ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retriever():
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
    store.add_documents(TEXT_DOCS)
    return store.as_retriever(search_kwargs={"k": 4})


def test_contextual_compression_retriever(retriever):
    from langchain_classic.retrievers import ContextualCompressionRetriever

    compressor = TokenPruneCompressor(budget=60, tokenizer=hf_tokenizer())
    compression = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)
    result = compression.invoke("How many hours a day do cats sleep?")
    assert "cats.txt" in {d.metadata["source"] for d in result}
    assert "m" not in {d.metadata["source"] for d in result}  # nothing relevant in the market news
    assert sum(len(hf_tokenizer().encode(d.page_content, add_special_tokens=False)) for d in result) <= 60
    async_result = asyncio.run(compression.ainvoke("How many hours a day do cats sleep?"))
    assert [d.page_content for d in async_result] == [d.page_content for d in result]


def test_document_compressor_pipeline():
    from langchain_classic.retrievers.document_compressors import DocumentCompressorPipeline

    pipeline = DocumentCompressorPipeline(
        transformers=[HtmlCleaner(output="text"), TokenPruneCompressor(budget=30, tokenizer=bpe_count)]
    )
    (result,) = pipeline.compress_documents(TEXT_DOCS[2:3], "When did Etna erupt?")
    assert "<" not in result.page_content and "Etna" in result.page_content
    assert bpe_count(result.page_content) <= 30
    assert result.metadata["tokenprune"]["format"] == "text"  # the cleaner turned HTML into text


def test_lcel_chain_with_fake_chat_model(retriever):
    compressor = TokenPruneCompressor(budget=50, tokenizer=bpe_count)
    prompt = ChatPromptTemplate.from_messages([("human", "Context:\n{context}\n\nQuestion: {question}")])
    seen = []

    def format_documents(documents):
        seen.extend(documents)
        return "\n\n".join(document.page_content for document in documents)

    chain = (
        {
            "context": {"documents": retriever, "query": RunnablePassthrough()}
            | compressor.as_runnable()
            | format_documents,
            "question": RunnablePassthrough(),
        }
        | prompt
        | FakeListChatModel(responses=["sixteen hours"])
        | StrOutputParser()
    )
    assert chain.invoke("How many hours do cats sleep?") == "sixteen hours"
    assert seen and total_tokens(seen) <= 50
    seen.clear()
    assert asyncio.run(chain.ainvoke("How many hours do cats sleep?")) == "sixteen hours"
    assert seen and total_tokens(seen) <= 50


def test_async_compression_runs_off_the_event_loop():
    import threading

    main_thread = threading.get_ident()
    threads = []

    def counting(text):
        threads.append(threading.get_ident())
        return bpe_count(text)

    compressor = TokenPruneCompressor(budget=40, tokenizer=counting)
    result = asyncio.run(compressor.acompress_documents(TEXT_DOCS, "cats sleep"))
    assert result == compressor.compress_documents(TEXT_DOCS, "cats sleep")
    assert threads and threads[0] != main_thread


# --- HtmlCleaner ---------------------------------------------------------------------------------------


def test_html_cleaner_sync_and_async():
    cleaner = HtmlCleaner(output="markdown")
    documents = [Document(page_content=ARTICLE, metadata={"nested": {"a": 1}}), Document(page_content="")]
    result = cleaner.transform_documents(documents)
    assert (
        result[0].page_content.startswith("Volcano report")
        and "# Etna erupts again" in result[0].page_content
    )
    assert (
        result[0].metadata == {"nested": {"a": 1}}
        and result[0].metadata["nested"] is not documents[0].metadata["nested"]
    )
    assert result[1].page_content == ""
    assert asyncio.run(cleaner.atransform_documents(documents)) == result
    assert cleaner.transform_documents([]) == []


def test_html_cleaner_main_content_and_bad_output():
    pytest.importorskip("trafilatura")
    (result,) = HtmlCleaner(output="text", main_content=True).transform_documents(
        [Document(page_content=ARTICLE)]
    )
    assert "Copyright" not in result.page_content and "Etna Rosso" in result.page_content
    with pytest.raises(ValueError, match="output"):
        HtmlCleaner(output="pdf")
