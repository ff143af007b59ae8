"""Time to first token of long prompts with prefill token skipping (LazySkip, GemFilter), against the
FLOP-ideal speedup.

A Llama-shaped causal LM with random weights (FLOPs do not depend on the values), scaled so a 4k-token
prefill takes a few seconds on a small CPU. TTFT is one prefill forward that returns the next-token
logits (`logits_to_keep=1`, as generate() does), timed as the CPU time of this process on `--threads`
threads (default 1): on a shared machine wall time mostly measures the other tenants; the wall
times are kept in the JSON. Selection time (from the run's stats) is wall time, so its share is an
upper bound when the machine is loaded. For each prompt length and method it prints the
median TTFT, speedup vs unpruned, the FLOP-ideal speedup (attention + MLP FLOPs of the tokens each
layer really processed, GemFilter's filter pass included), speedup / ideal, and the selection time as
% of the unpruned prefill (LazySkip: scoring; GemFilter: filter pass + scoring).

    python benchmarks/prefill_skip.py [--runs 3] [--lengths 1024,2048,4096] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import tokenprune as tp


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
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=8192,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


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


def ttft(model, input_ids: torch.Tensor) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one prefill up to the first token."""
    cpu, wall = time.process_time(), time.perf_counter()
    with torch.inference_mode():
        model(input_ids=input_ids, logits_to_keep=1, use_cache=True).logits.argmax(-1)
    return time.process_time() - cpu, time.perf_counter() - wall


def methods(shape: Shape) -> dict:
    filter_layer = round(13 / 32 * shape.layers)  # GemFilter's layer 13 of Llama-3.1-8B, scaled to depth
    return {
        "unpruned": None,
        "LazySkip (default)": tp.LazySkip(),
        "GemFilter (1024)": tp.GemFilter(filter_layer=filter_layer, budget=1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lengths", default="1024,2048,4096")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny model, for a smoke run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = QUICK if args.quick else Shape()
    lengths = [int(x) for x in args.lengths.split(",")]
    model = build_model(shape)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for length in lengths:
        input_ids = torch.randint(3, shape.vocab, (1, length), generator=generator)
        ttft(model, input_ids[:, :64])  # warm-up
        base_time = base_flops = None
        for method, pruner in methods(shape).items():
            stats = tp.RunStats()
            if pruner is None:
                timings = [ttft(model, input_ids) for _ in range(args.runs)]
            else:
                with tp.apply(model, pruner) as run:
                    timings = [ttft(model, input_ids) for _ in range(args.runs)]
                    stats = run.stats
            median = statistics.median(cpu for cpu, _ in timings)
            last = stats.records[-len(stats.records) // args.runs :] if stats.records else []
            counts = tokens_per_layer(method, pruner, tp.RunStats(list(last)), shape, length)
            flops = sum(layer_flops(shape, n) for n in counts)
            if pruner is None:
                base_time, base_flops = median, flops
            # stats time selection on the wall clock; scale it to CPU time with the run's own ratio
            cpu_per_wall = timings[-1][0] / timings[-1][1]
            selection = cpu_per_wall * sum(r.seconds for r in last)
            rows.append(
                {
                    "tokens": length,
                    "method": method,
                    "ttft_cpu_s": median,
                    "runs_cpu_s": [cpu for cpu, _ in timings],
                    "runs_wall_s": [wall for _, wall in timings],
                    "speedup": base_time / median,
                    "ideal_speedup": base_flops / flops,
                    "ratio": (base_time / median) / (base_flops / flops),
                    "selection_pct": 100 * selection / base_time,
                    "tokens_per_layer": counts,
                }
            )
            print(f"{length:>5} {method:<20} {median:7.3f}s", flush=True)

    header = "| prompt | method | TTFT (CPU s) | speedup | FLOP-ideal | speedup / ideal | selection % of unpruned |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['tokens']} | {r['method']} | {r['ttft_cpu_s']:.3f} | {r['speedup']:.2f}x | "
            f"{r['ideal_speedup']:.2f}x | {r['ratio']:.2f} | {r['selection_pct']:.1f} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    result = {
        "shape": asdict(shape),
        "runs": args.runs,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "rows": rows,
        "table": table,
    }
    path = out / ("prefill_skip_quick.json" if args.quick else "prefill_skip.json")
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
