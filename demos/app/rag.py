"""RAG / HTML tab: clean and prune a page for a question; kept and removed blocks, answers from both."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tokenprune.demos.app.checks import check_question
from tokenprune.demos.app.models import Loaded

PAGES = Path(__file__).parent.parent / "pages"
MIN_ANSWER_WORDS = 6
COUNT_COLUMNS = ("stage", "count", "% of raw")
ANSWER_COLUMNS = ("context", "answer", "how")


def bundled_pages() -> dict[str, Path]:
    return {path.stem: path for path in sorted(PAGES.glob("*.html"))}


def page_question(html: str) -> str:
    """The question a bundled page suggests (its `demo-question` meta tag), or ""."""
    found = re.search(r'<meta name="demo-question" content="([^"]*)"', html)
    return found.group(1) if found else ""


@dataclass
class RagResult:
    counts: list[dict]  # tokens per stage
    blocks: list[tuple[str, str]]  # (block text, "kept" | "removed") in page order
    pruned: str
    answers: list[dict]
    unit: str  # what the counts count: "tokens" or "words + punctuation"


def whole_sentences(blocks, index: int) -> str:
    """Block `index` completed to whole sentences from the other blocks of its element (a sentence
    longer than the block size is cut across blocks), so that an answer ends where a sentence does."""
    from tokenprune.context import split_sentences

    path = blocks[index].path
    text, start = "", 0
    for i, block in enumerate(blocks):
        if block.path == path:
            if i == index:
                start = len(text)
            text += block.text.strip() + " "
    end = start + len(blocks[index].text.strip())
    picked, position = [], 0
    for sentence in split_sentences(text):
        begin = text.index(sentence, position)
        position = begin + len(sentence)
        if begin < end and position > start:
            picked.append(sentence)
    return " ".join(picked)


def to_sentence_end(text: str) -> str:
    """Generated text up to its last complete sentence, or whole (marked cut) if none ends."""
    from tokenprune.context import split_sentences

    sentences = split_sentences(text)
    while sentences and not re.search(r"[.!?…。！？][\"'”’)\]]*$", sentences[-1]):
        sentences.pop()
    if sentences:
        return " ".join(sentences)
    return f"{text} …" if text else text


def extractive_answer(relevance, blocks, among: list[int]) -> tuple[str, float]:
    """The sentences of the block among `among` that the pruner's scorer finds most relevant, with its
    relevance."""
    if not among:
        return "", 0.0
    best = max(among, key=lambda i: relevance[i])
    return whole_sentences(blocks, best), float(relevance[best])


@torch.no_grad()
def generated_answer(lm: Loaded, question: str, context: str, max_new_tokens: int = 48) -> tuple[str, str]:
    """(answer, how it was made): greedy generation from the context, or why there is none."""
    prompt = f"Context:\n{context}\n\nQuestion: {question}\nAnswer:"
    inputs = lm.tokenizer(prompt, return_tensors="pt")
    inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    length = inputs["input_ids"].shape[1]
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    if limit is not None and length + max_new_tokens > limit:
        return "", f"{lm.name}: the prompt has {length} tokens, more than its {limit}-token context"
    started = time.perf_counter()
    output = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    seconds = time.perf_counter() - started
    answer = lm.tokenizer.decode(output[0, length:], skip_special_tokens=True).strip()
    return to_sentence_end(answer), f"{lm.name}, {length} prompt tokens, {seconds:.2f} s"


def run_rag(html, question, budget, scorer: str = "bm25", lm: Loaded | None = None) -> RagResult:
    """Clean and prune a page for a question; answer from the whole cleaned page and from the pruned
    context: with `lm` (a real text model) by generation, otherwise extractively (the block the
    pruner's scorer ranks first), since the toy models cannot read English."""
    from tokenprune.context import HtmlPruner, clean_html

    if not isinstance(html, str) or not html.strip():
        raise ValueError("Paste an HTML page or pick a bundled one.")
    question = check_question(question)
    try:
        budget = int(budget)
    except (TypeError, ValueError):
        raise ValueError(f"The budget is a number of tokens, got {budget!r}.") from None
    if budget < 1:
        raise ValueError(f"The budget is a number of tokens >= 1, got {budget}.")
    tokenizer = lm.tokenizer if lm is not None else None
    pruner = HtmlPruner(budget=budget, tokenizer=tokenizer, scorer=scorer, output="markdown")
    cleaned = clean_html(html, output="markdown")
    if not cleaned.strip():
        raise ValueError("The page has no visible text after cleaning.")
    result = pruner.prune(html, query=question)
    document, _ = pruner.document(html)
    kept = {(block.path, block.span) for block in result.kept}
    blocks = [
        (block.text + "\n", "kept" if (block.path, block.span) in kept else "removed")
        for block in document.tree.blocks
    ]
    unit = "tokens" if tokenizer is not None else "words + punctuation"
    raw, clean, pruned = result.tokens_before, pruner.counter(cleaned), result.tokens_after
    counts = [
        {"stage": "raw HTML", "count": raw, "% of raw": 100.0},
        {"stage": "cleaned (markdown)", "count": clean, "% of raw": round(100 * clean / raw, 1)},
        {"stage": f"pruned (budget {budget})", "count": pruned, "% of raw": round(100 * pruned / raw, 1)},
    ]
    answers = []
    if lm is not None:
        for context_name, context in (("whole cleaned page", cleaned), ("pruned context", result.text)):
            text, how = generated_answer(lm, question, context)
            answers.append({"context": context_name, "answer": text, "how": how})
    else:
        texts = [text for text, _ in blocks]
        relevance = pruner.scorer.relevance(question, texts)
        # headings and labels match the query's words without stating anything: answers come from
        # blocks of a few words at least
        statements = [i for i, text in enumerate(texts) if len(text.split()) >= MIN_ANSWER_WORDS]
        kept_statements = [i for i in statements if blocks[i][1] == "kept"]
        for context_name, among in (("whole cleaned page", statements), ("pruned context", kept_statements)):
            text, score = extractive_answer(relevance, document.tree.blocks, among)
            how = f"best block (relevance {score:.2f}), to its sentence ends"
            answers.append({"context": context_name, "answer": text, "how": how})
    return RagResult(counts, blocks, result.text, answers, unit)
