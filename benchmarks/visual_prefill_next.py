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

import os
from dataclasses import dataclass

import common
import torch
from visual_prefill import IMAGE_TOKEN, QUICK_SIZES, text_layer_flops
from visual_prefill_qwen import table

from tokenprune.zoo import builders


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


QUICK = Geometry(crop=112, text_layers=4, **QUICK_SIZES)


def build_model(g: Geometry):
    size = g.crop * g.crops_per_side
    return builders.llava_next(
        vision=common.sizes(g, "vision", image_size=g.crop, patch_size=g.patch_size),
        text=common.sizes(g, "text", vocab=g.vocab, max_positions=8192),
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


def flops_of(g: Geometry, records) -> float:
    """FLOPs of a prefill that left the pruning `records` ([]: unpruned); the newlines are never pruned."""
    counts = common.tokens_per_layer(
        records, g.text_layers, fixed=g.text_tokens + g.newlines, candidates=g.candidates
    )
    return common.prefill_flops(g, vision_flops(g), text_layer_flops, counts)


def pruners_for(budget: int, g: Geometry) -> dict:
    return {
        name: p for name, p in common.visual_pruners(budget, g.text_layers).items() if name != "FoPru (row)"
    }


def main() -> None:
    args = common.benchmark_parser(
        __doc__, runs=3, budgets="640,320,160", results="visual_prefill_next.json"
    ).parse_args()
    clock = common.use_threads(args.threads)
    g = QUICK if args.quick else Geometry()
    model, inputs = build_model(g), build_inputs(g)
    load = os.getloadavg()[0]
    configs = common.pruned_configs(
        [int(b) for b in args.budgets.split(",")], lambda budget: pruners_for(budget, g)
    )
    seconds, recorded = common.prefill_timings(
        model, lambda: model(**inputs), configs, args.runs, clock, tower=model.model.vision_tower
    )
    base, rows = common.summarize(seconds, recorded, lambda records: flops_of(g, records), tower_flops(g))
    print(
        f"LLaVA-NeXT geometry: {g.candidates} image tokens + {g.newlines} newlines + {g.text_tokens} text tokens; "
        f"tower {g.vision_layers}x{g.vision_hidden} on {1 + g.crops_per_side**2} crops, LLM {g.text_layers}x"
        f"{g.text_hidden}; {common.run_conditions(args.threads, args.runs, load)}"
    )
    print(table("image", g.candidates, base, rows, unpruned_budget="-", budget_format=".0f"))
    common.write_json(args.out, {"geometry": g.__dict__, "unpruned": base, "rows": rows, "load_before": load})


if __name__ == "__main__":
    main()
