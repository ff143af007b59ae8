"""Prefill latency of visual-token pruners on Qwen2.5-VL geometry (an image of ~1,000 merged tokens and
a short video of >= 2,000), against the FLOP-ideal speedup.

The vision tower keeps Qwen2.5-VL's structure (14 px patches, 2x2 merging, 112 px windows, full
attention every fourth block) at reduced width and depth; the language model is scaled so an unpruned
prefill takes about a second on one CPU core (random weights: FLOPs do not depend on values).
For every pruner and budget (fraction of the visual tokens) it prints the median prefill time, the
vision tower's share of it, speedup vs unpruned, the FLOP-ideal speedup (vision tower + LLM),
speedup / ideal, the tower-aware ideal (the tower costs what it measured unpruned, the rest scales with
its FLOPs) and selection time as % of the unpruned prefill. Vision-attention scoring (VisionZip, FoPru)
runs inside the tower and counts in the prefill and tower times, not in the selection column.

Runs are interleaved (`tokenprune.timing`): every round runs each config once, each round starting at
another config, so load from other jobs falls on pruned and unpruned runs alike; one thread, timed as
process CPU time.

    python benchmarks/visual_prefill_qwen.py [--runs 3] [--threads 1] [--budgets 0.1,0.2,0.3] [--quick]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import common
import torch

import tokenprune as tp
from tokenprune.pruners.views import SplitByArea
from tokenprune.zoo import builders

IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 151655, 151656, 151652, 151653
PATCH, TEMPORAL, MERGE, WINDOW = 14, 2, 2, 112


@dataclass(frozen=True)
class Geometry:
    name: str
    grid_thw: tuple[int, int, int]  # in patches (t in temporal patches)
    vision_hidden: int = 96
    vision_layers: int = 8
    vision_heads: int = 3
    vision_ffn: int = 192
    text_hidden: int = 512
    text_layers: int = 12
    text_heads: int = 8
    text_kv_heads: int = 2
    text_ffn: int = 1536
    vocab: int = 152064
    text_tokens: int = 60
    full_attention_every: int = 4  # vision blocks; the others attend within windows

    @property
    def full_attention_blocks(self) -> list[int]:
        return list(range(self.full_attention_every - 1, self.vision_layers, self.full_attention_every))

    @property
    def patches(self) -> int:
        t, h, w = self.grid_thw
        return t * h * w

    @property
    def merged(self) -> int:
        return self.patches // MERGE**2

    @property
    def kind(self) -> str:
        return "image" if self.grid_thw[0] == 1 else "video"


IMAGE = Geometry("image 868x924 px", (1, 62, 66))  # 31 x 33 = 1,023 merged tokens
VIDEO = Geometry("video 16 frames 392x504 px", (8, 28, 36))  # 8 x 14 x 18 = 2,016 merged tokens
QUICK_TEXT = dict(text_hidden=128, text_layers=8, text_heads=4, text_tokens=20)
QUICK = [
    replace(IMAGE, name="quick image", grid_thw=(1, 16, 20), **QUICK_TEXT),
    replace(VIDEO, name="quick video", grid_thw=(2, 12, 12), **QUICK_TEXT),
]


def build_model(g: Geometry):
    return builders.qwen_vl(
        "qwen2_5_vl",
        vision=common.sizes(
            g,
            "vision",
            out=g.text_hidden,
            patch_size=PATCH,
            temporal_patch_size=TEMPORAL,
            merge=MERGE,
            window_size=WINDOW,
            fullatt_block_indexes=g.full_attention_blocks,
        ),
        text=common.sizes(g, "text", vocab=g.vocab, max_positions=32768),
        rope_theta=1e6,
        image_token=IMAGE_TOKEN,
        video_token=VIDEO_TOKEN,
        vision_start=VISION_START,
        vision_end=VISION_END,
    )


def build_inputs(g: Geometry) -> dict:
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(3, min(g.vocab, 150000), (g.text_tokens,), generator=generator)
    before = g.text_tokens // 4
    token = IMAGE_TOKEN if g.kind == "image" else VIDEO_TOKEN
    visual = torch.tensor([VISION_START] + [token] * g.merged + [VISION_END])
    ids = torch.cat([text[:before], visual, text[before:]])[None]
    types = torch.zeros_like(ids, dtype=torch.int32)
    types[ids == token] = 1 if g.kind == "image" else 2
    pixels = torch.randn(g.patches, 3 * TEMPORAL * PATCH * PATCH, generator=generator)
    grid = torch.tensor([g.grid_thw])
    key = "" if g.kind == "image" else "_videos"
    return {
        "input_ids": ids,
        "mm_token_type_ids": types,
        f"pixel_values{key}": pixels,
        f"{g.kind}_grid_thw": grid,
        "logits_to_keep": 1,  # generate() computes only the last logits at prefill too
    }


def vision_flops(g: Geometry, records=()) -> float:
    """The tower: patch embedding, each block at the merge groups it ran (fewer after the in-tower
    `records`; their windows taken as thinned evenly) and the merger over the groups it received."""
    from transformers.vision_utils import get_vision_window_index

    _, cu_windows = get_vision_window_index(torch.tensor([g.grid_thw]), MERGE, WINDOW, PATCH)
    windows = cu_windows.diff().double()
    frame = g.grid_thw[1] * g.grid_thw[2]
    groups = [g.merged] * g.vision_layers
    for r in records:
        if r.stage == "in_tower":
            groups[r.layer :] = [r.tokens_after] * (g.vision_layers - r.layer)
    d = g.vision_hidden
    blocks = 0.0
    for layer, kept in enumerate(groups):
        share = kept / g.merged
        blocks += 2 * g.patches * share * (4 * d * d + 3 * d * g.vision_ffn)  # qkv + proj, gated MLP
        if layer in g.full_attention_blocks:
            blocks += 4 * g.grid_thw[0] * (frame * share) ** 2 * d  # QK^T and AV within each frame
        else:
            blocks += 4 * float(((windows * share) ** 2).sum()) * d
    embed = 2 * g.patches * 3 * TEMPORAL * PATCH * PATCH * d
    merger = 2 * groups[-1] * ((4 * d) ** 2 + 4 * d * g.text_hidden)
    return embed + blocks + merger


def text_layer_flops(g: Geometry, n: int) -> float:
    d = g.text_hidden
    kv = d * g.text_kv_heads // g.text_heads
    return 2 * n * (2 * d * d + 2 * d * kv + 3 * d * g.text_ffn) + 2 * n * n * d  # causal: half of QK^T, AV


def flops_of(g: Geometry, records) -> float:
    """FLOPs of a prefill that left the pruning `records` ([]: unpruned); the vision start and end
    tokens count as text."""
    counts = common.tokens_per_layer(records, g.text_layers, fixed=g.text_tokens + 2, candidates=g.merged)
    return common.prefill_flops(g, vision_flops(g, records), text_layer_flops, counts)


def pruners_for(budget: float, g: Geometry) -> dict:
    pruners = common.visual_pruners(budget, g.text_layers) | {
        "DivPrune 2x + FastV": tp.compose(tp.DivPrune(min(1.0, 2 * budget)), tp.FastV(budget, layer=2)),
    }
    if g.kind == "video":
        pruners["DivPrune per frame"] = SplitByArea(pruner=tp.DivPrune(budget))
    return pruners


def bench(g: Geometry, budgets: list[float], rounds: int, clock) -> tuple[dict, list[dict]]:
    model, inputs = build_model(g), build_inputs(g)
    configs = common.pruned_configs(budgets, lambda budget: pruners_for(budget, g))
    seconds, recorded = common.prefill_timings(
        model, lambda: model(**inputs), configs, rounds, clock, tower=model.model.visual
    )
    base, rows = common.summarize(seconds, recorded, lambda records: flops_of(g, records), vision_flops(g))
    return base, [{"input": g.kind, **row} for row in rows]


HEADER = (
    "| input | pruner | budget | tokens | prefill (s) | tower (s) | speedup | FLOP-ideal | speedup/ideal "
    "| tower-aware ideal | speedup/tower-aware | selection % |"
)


def table(
    kind: str,
    tokens: int,
    base: dict,
    rows: list[dict],
    unpruned_budget: str = "1.0",
    budget_format: str = "",
) -> str:
    """The Markdown table of `summarize`'s medians for one input (this script's and LLaVA-NeXT's)."""
    lines = [HEADER, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines.append(
        f"| {kind} | unpruned | {unpruned_budget} | {tokens} | {base['prefill_s']:.3f} | {base['tower_s']:.3f} "
        "| 1.00 | 1.00 | 1.00 | 1.00 | 1.00 | 0.00 |"
    )
    lines += [
        f"| {kind} | {r['pruner']} | {r['budget']:{budget_format}} | {r['tokens']} | {r['prefill_s']:.3f} | "
        f"{r['tower_s']:.3f} | {r['speedup']:.2f} | {r['ideal']:.2f} | {r['ratio']:.2f} | "
        f"{r['tower_aware_ideal']:.2f} | {r['tower_aware_ratio']:.2f} | {r['selection_pct']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines)


def main() -> None:
    parser = common.benchmark_parser(
        __doc__, runs=3, budgets="0.1,0.2,0.3", results="visual_prefill_qwen.json"
    )
    parser.add_argument("--only", choices=["image", "video"], help="run one input only")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    clock = common.use_threads(args.threads)
    geometries = QUICK if args.quick else [IMAGE, VIDEO]
    results = []
    for g in geometries:
        if args.only and g.kind != args.only:
            continue
        load = os.getloadavg()[0]
        base, rows = bench(g, budgets, args.runs, clock)
        results.append({"geometry": g.__dict__, "unpruned": base, "rows": rows, "load_before": load})
        print(
            f"Qwen2.5-VL geometry, {g.name}: {g.merged} visual + {g.text_tokens + 2} text tokens; tower "
            f"{g.vision_layers}x{g.vision_hidden}, LLM {g.text_layers}x{g.text_hidden}; "
            f"{common.run_conditions(args.threads, args.runs, load)}"
        )
        print(table(g.kind, g.merged, base, rows), flush=True)
    common.write_json(args.out, results)


if __name__ == "__main__":
    main()
