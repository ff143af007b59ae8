"""Time to first token of long prompts with prefill token skipping (LazySkip, GemFilter), against the
FLOP-ideal speedup.

A Llama-shaped causal LM with random weights (FLOPs do not depend on the values), scaled so a 4k-token
prefill takes a few seconds on a small CPU. TTFT is one prefill forward that returns the next-token
logits (`logits_to_keep=1`, as generate() does), in interleaved rounds (`tokenprune.timing`: each
round runs every method once) timed as the CPU time of this process on one thread (`--threads 1`,
the default; on a shared machine wall time mostly measures the other tenants) or as wall time on
more. Selection time (from the run's stats) is wall time, so its share is an upper bound when the
machine is loaded. For each prompt length and method it prints the
median TTFT, speedup vs unpruned, the FLOP-ideal speedup (attention + MLP FLOPs of the tokens each
layer really processed, GemFilter's filter pass included), speedup / ideal, and the selection time as
% of the unpruned prefill (LazySkip: scoring; GemFilter: filter pass + scoring).

    python benchmarks/prefill_skip.py [--runs 3] [--threads 1] [--lengths 1024,2048,4096] [--quick]
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass

import torch
from common import RESULTS, benchmark_parser, clock_name, prefill_timings, use_threads, write_json

import tokenprune as tp
from tokenprune.timing import medians
from tokenprune.zoo import builders


@dataclass(frozen=True)
class Shape:
    hidden: int = 512
    layers: int = 8
    heads: int = 8
    kv_heads: int = 2
    ffn: int = 1376
    vocab: int = 32000

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


QUICK = Shape(hidden=128, layers=8, heads=4, kv_heads=2, ffn=256, vocab=1000)


def build_model(shape: Shape):
    return builders.causal_lm("llama", **asdict(shape), max_positions=8192)


def layer_flops(shape: Shape, tokens: int) -> float:
    """Forward FLOPs of one decoder layer prefilling `tokens` tokens with causal attention."""
    d, q, kv = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    projections = 2 * tokens * (d * q + 2 * d * kv + q * d)
    mlp = 2 * tokens * 3 * d * shape.ffn
    attention = 2 * 2 * shape.heads * shape.head_dim * tokens * (tokens + 1) / 2  # QK^T and AV, causal
    return projections + mlp + attention


def tokens_per_layer(method: str, pruner, stats: tp.RunStats, shape: Shape, length: int) -> list[int]:
    """Tokens each decoder layer processed in the last prefill (GemFilter: filter pass, then full pass)."""
    if method == "unpruned":
        return [length] * shape.layers
    if method.startswith("LazySkip"):
        counts, current = [], length
        kept = {r.layer: r.tokens_after + 1 for r in stats.records}  # + the final token, never prunable
        for layer in range(shape.layers):
            current = kept.get(layer, current)
            counts.append(current)
        return counts
    kept = stats.records[-1].tokens_after
    return [length] * pruner.filter_layer + [kept] * shape.layers


def methods(shape: Shape) -> dict:
    filter_layer = round(13 / 32 * shape.layers)  # GemFilter's layer 13 of Llama-3.1-8B, scaled to depth
    return {
        "unpruned": None,
        "LazySkip (default)": tp.LazySkip(),
        "GemFilter (1024)": tp.GemFilter(filter_layer=filter_layer, budget=1024),
    }


def main() -> None:
    parser = benchmark_parser(__doc__, runs=3)
    parser.add_argument("--lengths", default="1024,2048,4096")
    args = parser.parse_args()
    clock = use_threads(args.threads)
    shape = QUICK if args.quick else Shape()
    lengths = [int(x) for x in args.lengths.split(",")]
    model = build_model(shape)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for length in lengths:
        input_ids = torch.randint(3, shape.vocab, (1, length), generator=generator)
        pruners = methods(shape)
        # one prefill up to the first token: next-token logits only, as generate() computes them
        seconds, recorded = prefill_timings(
            model,
            lambda ids=input_ids: model(input_ids=ids, logits_to_keep=1, use_cache=True),
            pruners,
            args.runs,
            clock,
        )
        ttft = medians(seconds)
        base_time = ttft["unpruned"]
        base_flops = shape.layers * layer_flops(shape, length)
        for method, pruner in pruners.items():
            records = recorded[method].records
            counts = tokens_per_layer(method, pruner, tp.RunStats(records), shape, length)
            flops = sum(layer_flops(shape, n) for n in counts)
            # the records' selection time (GemFilter: filter pass + scoring) is wall time
            selection = sum(r.seconds for r in records)
            rows.append(
                {
                    "tokens": length,
                    "method": method,
                    "ttft_s": ttft[method],
                    "runs_s": seconds[method],
                    "speedup": base_time / ttft[method],
                    "ideal_speedup": base_flops / flops,
                    "ratio": (base_time / ttft[method]) / (base_flops / flops),
                    "selection_pct": 100 * selection / base_time,
                    "tokens_per_layer": counts,
                }
            )
            print(f"{length:>5} {method:<20} {ttft[method]:7.3f}s", flush=True)

    unit = "CPU s" if args.threads == 1 else "wall s"
    header = f"| prompt | method | TTFT ({unit}) | speedup | FLOP-ideal | speedup / ideal | selection % of unpruned |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['tokens']} | {r['method']} | {r['ttft_s']:.3f} | {r['speedup']:.2f}x | "
            f"{r['ideal_speedup']:.2f}x | {r['ratio']:.2f} | {r['selection_pct']:.1f} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    result = {
        "shape": asdict(shape),
        "runs": args.runs,
        "threads": args.threads,
        "clock": clock_name(args.threads),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "rows": rows,
        "table": table,
    }
    path = RESULTS / ("prefill_skip_quick.json" if args.quick else "prefill_skip.json")
    write_json(path, result)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
