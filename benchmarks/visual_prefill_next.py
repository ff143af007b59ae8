"""Prefill latency of visual-token pruners on LLaVA-NeXT geometry, against the FLOP-ideal speedup.

A 672 x 672 image becomes a base view and 2 x 2 crops of 336 px (patch 14): 576 + 2304 = 2880
candidate tokens plus 48 newline tokens, which are always kept. Random weights (the FLOPs do not
depend on them); the language model is scaled down so an unpruned prefill takes seconds on a CPU.
Columns and timing as in `visual_prefill_qwen.py` (interleaved rounds of `tokenprune.timing`,
process CPU time on one thread); FLOP-ideal counts the vision tower (5 crops), the projector and every decoder layer at the
length it actually runs.

    python benchmarks/visual_prefill_next.py [--runs 3] [--threads 1] [--budgets 640,320,160] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from common import clock_name, prefill_timings, pruned_configs, summarize, use_threads
from visual_prefill import text_layer_flops, tower_and_text_sizes
from visual_prefill_qwen import HEADER

import tokenprune as tp
from tokenprune.zoo import builders

IMAGE_TOKEN = 32000


@dataclass(frozen=True)
class Geometry:
    crop: int = 336
    patch_size: int = 14
    crops_per_side: int = 2
    vision_hidden: int = 256
    vision_layers: int = 6
    vision_heads: int = 4
    vision_ffn: int = 1024
    text_hidden: int = 512
    text_layers: int = 8
    text_heads: int = 8
    text_ffn: int = 1376
    vocab: int = 32064
    text_tokens: int = 60

    @property
    def side(self) -> int:
        return self.crop // self.patch_size

    @property
    def candidates(self) -> int:
        return self.side**2 * (1 + self.crops_per_side**2)

    @property
    def newlines(self) -> int:
        return self.side * self.crops_per_side


QUICK = Geometry(crop=112, vision_hidden=64, vision_layers=2, vision_heads=2, vision_ffn=128, text_hidden=128,
                 text_layers=4, text_heads=4, text_ffn=256, text_tokens=20)  # fmt: skip


def build_model(g: Geometry):
    size = g.crop * g.crops_per_side
    vision, text = tower_and_text_sizes(g, g.crop, max_positions=8192)
    return builders.llava_next(
        vision=vision,
        text=text,
        image_token=IMAGE_TOKEN,
        pinpoints=[[g.crop, size], [size, g.crop], [size, size]],
    )


def build_inputs(g: Geometry) -> dict:
    generator = torch.Generator().manual_seed(0)
    before = g.text_tokens // 4
    text = torch.randint(3, 32000, (g.text_tokens,), generator=generator)
    image = torch.full((g.candidates + g.newlines,), IMAGE_TOKEN)
    ids = torch.cat([text[:before], image, text[before:]])[None]
    crops = 1 + g.crops_per_side**2
    size = g.crop * g.crops_per_side
    return {
        "input_ids": ids,
        "pixel_values": torch.randn(1, crops, 3, g.crop, g.crop, generator=generator),
        "image_sizes": torch.tensor([[size, size]]),
        "logits_to_keep": 1,
    }


def tower_flops(g: Geometry) -> float:
    n, d = g.side**2 + 1, g.vision_hidden
    per_crop = g.vision_layers * (2 * n * (4 * d * d + 2 * d * g.vision_ffn) + 4 * n * n * d)
    return (1 + g.crops_per_side**2) * per_crop


def vision_flops(g: Geometry) -> float:
    projector = 2 * g.candidates * (g.vision_hidden * g.text_hidden + g.text_hidden**2)
    return tower_flops(g) + projector


def prefill_flops(g: Geometry, tokens_per_layer: list[int]) -> float:
    return (
        vision_flops(g) + sum(text_layer_flops(g, n) for n in tokens_per_layer) + 2 * g.text_hidden * g.vocab
    )


def tokens_per_layer(g: Geometry, records) -> list[int]:
    fixed = g.text_tokens + g.newlines
    counts = [fixed + g.candidates] * g.text_layers
    for r in records:
        for layer in range(0 if r.stage == "pre_llm" else r.layer, g.text_layers):
            counts[layer] = fixed + r.tokens_after
    return counts


def pruners_for(budget: int, g: Geometry) -> dict:
    depth = g.text_layers
    return {
        "DivPrune": tp.DivPrune(budget),
        "VisionZip": tp.VisionZip(budget),
        "FoPru (rank)": tp.FoPru(budget),
        "Random": tp.RandomPrune(budget),
        "Uniform": tp.UniformPrune(budget),
        "FastV (K=2)": tp.FastV(budget, layer=2),
        f"Feather ({depth // 4},{depth // 2})": tp.Feather(budget, layers_at=(depth // 4, depth // 2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed rounds over all configs (median)")
    parser.add_argument("--threads", type=int, default=1, help="1: CPU time of the process; more: wall time")
    parser.add_argument("--budgets", default="640,320,160")
    parser.add_argument("--quick", action="store_true", help="tiny geometry, to check the script runs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "visual_prefill_next.json"))
    args = parser.parse_args()
    clock = use_threads(args.threads)
    g = QUICK if args.quick else Geometry()
    model, inputs = build_model(g), build_inputs(g)
    load = os.getloadavg()[0]
    configs = pruned_configs([int(b) for b in args.budgets.split(",")], lambda budget: pruners_for(budget, g))
    seconds, recorded = prefill_timings(
        model, lambda: model(**inputs), configs, args.runs, clock, tower=model.model.vision_tower
    )
    base, rows = summarize(
        seconds, recorded, lambda records: prefill_flops(g, tokens_per_layer(g, records)), tower_flops(g)
    )
    lines = [HEADER, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines.append(
        f"| image | unpruned | - | {g.candidates} | {base['prefill_s']:.3f} | {base['tower_s']:.3f} | 1.00 | 1.00 "
        "| 1.00 | 1.00 | 1.00 | 0.00 |"
    )
    lines += [
        f"| image | {r['pruner']} | {r['budget']:.0f} | {r['tokens']} | {r['prefill_s']:.3f} | {r['tower_s']:.3f} | "
        f"{r['speedup']:.2f} | {r['ideal']:.2f} | {r['ratio']:.2f} | {r['tower_aware_ideal']:.2f} | "
        f"{r['tower_aware_ratio']:.2f} | {r['selection_pct']:.2f} |"
        for r in rows
    ]
    print(
        f"LLaVA-NeXT geometry: {g.candidates} image tokens + {g.newlines} newlines + {g.text_tokens} text tokens; "
        f"tower {g.vision_layers}x{g.vision_hidden} on {1 + g.crops_per_side**2} crops, LLM {g.text_layers}x"
        f"{g.text_hidden}; {args.threads} thread(s) ({clock_name(args.threads)}), "
        f"{platform.processor() or platform.machine()}; median of {args.runs} interleaved rounds; "
        f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print("\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"geometry": g.__dict__, "unpruned": base, "rows": rows, "load_before": load}, indent=2)
    )


if __name__ == "__main__":
    main()
