"""Batch pruning throughput: `tokenprune prune-html` over the 181 pages of the article-extraction-benchmark
as one JSONL corpus, with 1 and 2 worker processes.

    .venv/bin/python benchmarks/context_batch.py [--data DIR] [--workers 1,2] [--rounds 3]

Each run is the whole command (start-up, reading, pruning to 1,000 tokens with all-MiniLM-L6-v2's
tokenizer and a query per page, writing JSONL), timed in wall time since the workers run in parallel,
through `tokenprune.timing.interleaved`: one untimed run per worker count, then the counts take turns
for `--rounds` rounds. Prints pages/s (median, min-max over the rounds); JSON to
benchmarks/results/context_batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from context import DEFAULT_DATA, RESULTS, THROUGHPUT_BUDGET, evidence_and_query, load_pages, tokenizer_path

from tokenprune.timing import interleaved


def write_corpus(pages: list[dict], path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for page in pages:
            query = (evidence_and_query(page["body"]) or ([], page["body"][:80]))[1]
            html = page["html"].decode("utf-8", errors="replace")
            out.write(json.dumps({"id": page["id"], "html": html, "query": query}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pages = load_pages(args.data, None)
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work) / "corpus.jsonl"
        write_corpus(pages, corpus)
        command = [sys.executable, "-m", "tokenprune.cli", "prune-html", str(corpus), "--budget"]
        command += [str(THROUGHPUT_BUDGET), "--tokenizer", str(tokenizer_path()), "--out", os.devnull]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

        def run(workers: int):
            return lambda: subprocess.run([*command, "--workers", str(workers)], check=True, env=env)

        seconds = interleaved(
            {str(n): run(n) for n in counts}, args.rounds, clock=time.perf_counter, warmup=1
        )
    rows = {}
    print(f"| workers | pages/s (median) | min-max over {args.rounds} rounds | seconds (median) |")
    print("|---|---|---|---|")
    for n in counts:
        rates = [len(pages) / s for s in seconds[str(n)]]
        rows[n] = {"seconds": seconds[str(n)], "pages_per_s": statistics.median(rates)}
        print(
            f"| {n} | {statistics.median(rates):.1f} | {min(rates):.1f}-{max(rates):.1f} | "
            f"{statistics.median(seconds[str(n)]):.2f} |"
        )
    print(f"{len(pages)} pages, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "context_batch.json").write_text(json.dumps({"pages": len(pages), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
