"""Prefill latency of visual-token pruners on LLaVA-1.5 geometry, against the FLOP-ideal speedup.

A CLIP-shaped tower yields 576 patch tokens (336 px, patch 14), the prompt adds ~60 text tokens,
and the language model is scaled so an unpruned prefill takes a few seconds on a laptop-class CPU
(random weights: the FLOPs do not depend on the values). For every pruner and budget it prints
the median prefill time, speedup vs unpruned, the FLOP-ideal speedup (vision tower + LLM),
speedup / ideal, selection time as % of the unpruned prefill, and peak extra memory. Runs are
interleaved (`tokenprune.timing`): every round runs each config once, so load from other jobs falls on
pruned and unpruned runs alike; one thread, timed as process CPU time.

    python benchmarks/visual_prefill.py [--runs 5] [--threads 1] [--budgets 64,128,192] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from common import clock_name, prefill_timings, pruned_configs, use_threads

import tokenprune as tp
from tokenprune.timing import medians
from tokenprune.zoo import builders

IMAGE_TOKEN = 32000


@dataclass(frozen=True)
class Geometry:
    image_size: int = 336
    patch_size: int = 14
    vision_hidden: int = 384
    vision_layers: int = 8
    vision_heads: int = 6
    vision_ffn: int = 1536
    text_hidden: int = 768
    text_layers: int = 16
    text_heads: int = 12
    text_ffn: int = 2048
    vocab: int = 32064
    text_tokens: int = 60

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


QUICK = Geometry(
    image_size=112,
    vision_hidden=64,
    vision_layers=2,
    vision_heads=2,
    vision_ffn=128,
    text_hidden=128,
    text_layers=8,
    text_heads=4,
    text_ffn=256,
    vocab=32064,
    text_tokens=20,
)


def tower_and_text_sizes(g, image_size: int, max_positions: int) -> tuple[dict, dict]:
    """The CLIP tower and Llama sizes of a geometry with `vision_*` and `text_*` fields (this
    script's and the LLaVA-NeXT benchmark's)."""
    vision = dict(
        hidden=g.vision_hidden,
        ffn=g.vision_ffn,
        layers=g.vision_layers,
        heads=g.vision_heads,
        image_size=image_size,
        patch_size=g.patch_size,
    )
    text = dict(
        vocab=g.vocab,
        hidden=g.text_hidden,
        ffn=g.text_ffn,
        layers=g.text_layers,
        heads=g.text_heads,
        max_positions=max_positions,
    )
    return vision, text


def build_model(g: Geometry):
    vision, text = tower_and_text_sizes(g, g.image_size, max_positions=4096)
    return builders.llava(vision=vision, text=text, image_token=IMAGE_TOKEN)


def build_inputs(g: Geometry) -> dict:
    generator = torch.Generator().manual_seed(0)
    before = g.text_tokens // 4
    text = torch.randint(3, 32000, (g.text_tokens,), generator=generator)
    ids = torch.cat([text[:before], torch.full((g.patches,), IMAGE_TOKEN), text[before:]])[None]
    return {
        "input_ids": ids,
        "pixel_values": torch.randn(1, 3, g.image_size, g.image_size, generator=generator),
        "logits_to_keep": 1,  # generate() computes only the last logits at prefill too
    }


def vision_flops(g: Geometry) -> float:
    n, d = g.patches + 1, g.vision_hidden
    per_layer = 2 * n * (4 * d * d + 2 * d * g.vision_ffn) + 4 * n * n * d
    return g.vision_layers * per_layer + 2 * g.patches * (g.vision_hidden * g.text_hidden + g.text_hidden**2)


def text_layer_flops(g: Geometry, n: int) -> float:
    d = g.text_hidden
    return 2 * n * (4 * d * d + 3 * d * g.text_ffn) + 2 * n * n * d  # causal: half of QK^T and AV


def prefill_flops(g: Geometry, tokens_per_layer: list[int]) -> float:
    return (
        vision_flops(g) + sum(text_layer_flops(g, n) for n in tokens_per_layer) + 2 * g.text_hidden * g.vocab
    )


def tokens_per_layer(g: Geometry, records, pruner) -> list[int]:
    full = g.patches + g.text_tokens
    counts = [full] * g.text_layers
    for r in records:
        start = 0 if r.stage == "pre_llm" else r.layer
        for layer in range(start, g.text_layers):
            counts[layer] = g.text_tokens + r.tokens_after
    return counts


def pruners_for(budget: int, g: Geometry) -> dict:
    depth = g.text_layers
    return {
        "DivPrune": tp.DivPrune(budget),
        "VisionZip": tp.VisionZip(budget),
        "FoPru (rank)": tp.FoPru(budget),
        "FoPru (row)": tp.FoPru(budget, strategy="row"),
        "Random": tp.RandomPrune(budget),
        "Uniform": tp.UniformPrune(budget),
        "FastV (K=2)": tp.FastV(budget, layer=2),
        f"Feather ({depth // 4},{depth // 2})": tp.Feather(budget, layers_at=(depth // 4, depth // 2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds over all configs (median)")
    parser.add_argument("--threads", type=int, default=1, help="1: CPU time of the process; more: wall time")
    parser.add_argument("--budgets", default="64,128,192")
    parser.add_argument("--quick", action="store_true", help="tiny geometry, to check the script runs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "visual_prefill.json"))
    args = parser.parse_args()
    clock = use_threads(args.threads)
    g = QUICK if args.quick else Geometry()
    model, inputs = build_model(g), build_inputs(g)
    configs = pruned_configs([int(b) for b in args.budgets.split(",")], lambda budget: pruners_for(budget, g))
    seconds, recorded = prefill_timings(
        model, lambda: model(**inputs), configs, args.runs, clock, peak_memory=True
    )
    prefill = medians(seconds)
    base_time, base_peak = prefill["unpruned"], max(recorded["unpruned"].peak_mb)
    base_flops = prefill_flops(g, [g.patches + g.text_tokens] * g.text_layers)
    rows = []
    for key, runs in recorded.items():
        if key == "unpruned":
            continue
        name, budget = key.rsplit("@", 1)
        ideal = base_flops / prefill_flops(g, tokens_per_layer(g, runs.records, configs[key]))
        speedup = base_time / prefill[key]
        rows.append(
            {
                "pruner": name,
                "budget": int(budget),
                "prefill_s": prefill[key],
                "speedup": speedup,
                "ideal": ideal,
                "ratio": speedup / ideal,
                "selection_pct": 100 * statistics.median(runs.selection) / base_time,
                "peak_mb": max(runs.peak_mb),
            }
        )
    header = "| pruner | tokens | prefill (s) | speedup | FLOP-ideal | speedup/ideal | selection % | peak extra MB |"
    lines = [
        header,
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| unpruned | {g.patches} | {base_time:.3f} | 1.00 | 1.00 | 1.00 | 0.0 | {base_peak:.0f} |",
    ]
    lines += [
        f"| {r['pruner']} | {r['budget']} | {r['prefill_s']:.3f} | {r['speedup']:.2f} | {r['ideal']:.2f} | "
        f"{r['ratio']:.2f} | {r['selection_pct']:.2f} | {r['peak_mb']:.0f} |"
        for r in rows
    ]
    print(
        f"LLaVA-1.5 geometry: {g.patches} patches + {g.text_tokens} text tokens; tower {g.vision_layers}x{g.vision_hidden}, "
        f"LLM {g.text_layers}x{g.text_hidden}; {args.threads} thread(s) ({clock_name(args.threads)}), "
        f"{platform.processor() or platform.machine()}; median of {args.runs} interleaved rounds"
    )
    print("\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"geometry": g.__dict__, "unpruned_s": base_time, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
