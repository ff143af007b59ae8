"""Prefill latency of visual-token pruners on LLaVA-1.5 geometry, against the FLOP-ideal speedup.

A CLIP-shaped tower yields 576 patch tokens (336 px, patch 14), the prompt adds ~60 text tokens,
and the language model is scaled so an unpruned prefill takes a few seconds on a laptop-class CPU
(random weights: the FLOPs do not depend on the values). For every pruner and budget it prints
the median prefill time, speedup vs unpruned, the FLOP-ideal speedup (vision tower + LLM),
speedup / ideal, selection time as % of the unpruned prefill, and peak extra memory. Runs are
interleaved (`tokenprune.timing`): every round runs each config once, so load from other jobs falls on
pruned and unpruned runs alike; one thread, timed as process CPU time.

    python benchmarks/visual_prefill.py [--runs 5] [--threads 1] [--budgets 64,128,192] [--quick]
        [--pruners DivPrune,CDPruner]
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import common
import torch

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


# the tiny sizes this script's and the LLaVA-NeXT benchmark's --quick geometries share
QUICK_SIZES = dict(
    vision_hidden=64, vision_layers=2, vision_heads=2, vision_ffn=128, text_hidden=128, text_heads=4, text_ffn=256,
    text_tokens=20,
)  # fmt: skip
QUICK = Geometry(image_size=112, text_layers=8, **QUICK_SIZES)


def build_model(g: Geometry):
    return builders.llava(
        vision=common.sizes(g, "vision", image_size=g.image_size, patch_size=g.patch_size),
        text=common.sizes(g, "text", vocab=g.vocab, max_positions=4096),
        image_token=IMAGE_TOKEN,
    )


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


def vision_flops(g: Geometry, records=()) -> float:
    """The tower's blocks, each at the tokens it ran ([CLS] included; fewer after the in-tower
    `records`), and the projector over the image tokens the tower returned."""
    blocks = [g.patches] * g.vision_layers
    for r in records:
        if r.stage == "in_tower":
            blocks[r.layer :] = [r.tokens_after] * (g.vision_layers - r.layer)
    d = g.vision_hidden
    tower = sum(2 * (n + 1) * (4 * d * d + 2 * d * g.vision_ffn) + 4 * (n + 1) ** 2 * d for n in blocks)
    return tower + 2 * blocks[-1] * (g.vision_hidden * g.text_hidden + g.text_hidden**2)


def text_layer_flops(g: Geometry, n: int) -> float:
    d = g.text_hidden
    return 2 * n * (4 * d * d + 3 * d * g.text_ffn) + 2 * n * n * d  # causal: half of QK^T and AV


def flops_of(g: Geometry, records) -> float:
    """FLOPs of a prefill that left the pruning `records` ([]: unpruned)."""
    counts = common.tokens_per_layer(records, g.text_layers, fixed=g.text_tokens, candidates=g.patches)
    return common.prefill_flops(g, vision_flops(g, records), text_layer_flops, counts)


def main() -> None:
    parser = common.benchmark_parser(__doc__, runs=5, budgets="64,128,192", results="visual_prefill.json")
    parser.add_argument("--pruners", default=None, help="comma-separated table names to run (default: all)")
    args = parser.parse_args()
    chosen = args.pruners.split(",") if args.pruners else None
    clock = common.use_threads(args.threads)
    g = QUICK if args.quick else Geometry()
    model, inputs = build_model(g), build_inputs(g)
    budgets = [int(b) for b in args.budgets.split(",")]
    configs = common.pruned_configs(
        budgets,
        lambda budget: {
            name: pruner
            for name, pruner in common.visual_pruners(budget, g.text_layers).items()
            if chosen is None or name in chosen
        },
    )
    seconds, recorded = common.prefill_timings(
        model, lambda: model(**inputs), configs, args.runs, clock, peak_memory=True
    )
    prefill = medians(seconds)
    base_time, base_peak = prefill["unpruned"], max(recorded["unpruned"].peak_mb)
    base_flops = flops_of(g, [])
    rows = []
    for key, runs in recorded.items():
        if key == "unpruned":
            continue
        name, budget = key.rsplit("@", 1)
        ideal = base_flops / flops_of(g, runs.records)
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
        f"LLM {g.text_layers}x{g.text_hidden}; {common.run_conditions(args.threads, args.runs)}"
    )
    print("\n".join(lines))
    common.write_json(args.out, {"geometry": g.__dict__, "unpruned_s": base_time, "rows": rows})


if __name__ == "__main__":
    main()
