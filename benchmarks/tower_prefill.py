"""End-to-end prefill (vision tower included) of in-tower pruning, pre-LLM pruning and the two composed,
at the same number of image tokens reaching the language model, on geometries whose tower/LLM FLOP
ratio is that of Qwen2.5-VL-7B and of LLaVA-1.5-7B.

Both geometries are LLaVA-style (a CLIP-shaped tower whose patch tokens the LLM reads, random weights).
Token counts are the real models' (1,024 image tokens for a ~1,000-merged-token Qwen2.5-VL image, 576
for LLaVA-1.5, plus 60 text tokens); widths are scaled down, and the tower depth is the one whose
tower/LLM FLOP ratio comes closest to the real model's (printed above each table). For every config it
prints the median prefill time, the tower's share, speedup vs unpruned, the FLOP-ideal speedup counting
the tower's FLOPs at the token counts it actually ran (pruned blocks are cheaper), speedup / ideal and
selection time, and each config's speedup over the fastest pre-LLM pruner alone at its budget. Runs are
interleaved (`tokenprune.timing`); one thread, process CPU time. `--toy N` adds the same configs'
accuracy on N held-out toy-vlm questions (budgets as fractions of its 64 image tokens).

    python benchmarks/tower_prefill.py [--only qwen|llava] [--runs 3] [--threads 1] [--budgets 0.1,0.25]
        [--toy 200] [--quick]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import common
from visual_prefill import build_inputs, build_model

import tokenprune as tp
from tokenprune.compose import as_composed


def clip_block_flops(n: int, d: int, ffn: int) -> float:
    return 2 * n * (4 * d * d + 2 * d * ffn) + 4 * n * n * d


def llm_layer_flops(n: int, d: int, ffn: int, heads: int, kv_heads: int) -> float:
    kv = d * kv_heads // heads
    return 2 * n * (2 * d * d + 2 * d * kv + 3 * d * ffn) + 2 * n * n * d  # causal: half of QK^T, AV


def qwen25_vl_7b_ratio() -> float:
    """Tower/LLM FLOPs of Qwen2.5-VL-7B on an image of 4,092 patches (1,023 merged tokens) + 60 text
    tokens: 32 blocks of width 1,280 (gated MLP 3,420; 112 px windows of 64 patches except in 4 blocks),
    the 2x2 merger, then 28 LLM layers of width 3,584 (28 heads, 4 KV heads, MLP 18,944)."""
    n, d = 4092, 1280
    tower = 32 * 2 * n * (4 * d * d + 3 * d * 3420) + 4 * 4 * n * n * d + 28 * 4 * n * 64 * d
    tower += 2 * 1023 * ((4 * d) ** 2 + 4 * d * 3584)
    return tower / (28 * llm_layer_flops(1023 + 60, 3584, 18944, 28, 4))


def llava15_7b_ratio() -> float:
    """Tower/LLM FLOPs of LLaVA-1.5-7B: CLIP ViT-L/14-336 (24 blocks of width 1,024, 577 tokens), the
    two-layer projector to 4,096, then 32 LLM layers of width 4,096 (MLP 11,008) on 576 + 60 tokens."""
    tower = 24 * clip_block_flops(577, 1024, 4096) + 2 * 576 * (1024 * 4096 + 4096 * 4096)
    return tower / (32 * llm_layer_flops(576 + 60, 4096, 11008, 32, 32))


@dataclass(frozen=True)
class Geometry:
    name: str
    target_ratio: float
    image_size: int
    vision_hidden: int
    vision_heads: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_ffn: int
    patch_size: int = 14
    vision_layers: int = 0  # 0: the depth matching target_ratio
    vocab: int = 32064
    text_tokens: int = 60

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def vision_ffn(self) -> int:
        return 4 * self.vision_hidden

    def tower_flops(self, tokens_per_block: list[int], projected: int | None = None) -> float:
        """The tower's blocks at the token counts they ran ([CLS] included) and the projector on the
        `projected` image tokens the tower returned (default: all patches)."""
        blocks = sum(clip_block_flops(n, self.vision_hidden, self.vision_ffn) for n in tokens_per_block)
        projected = self.patches if projected is None else projected
        return blocks + 2 * projected * (self.vision_hidden * self.text_hidden + self.text_hidden**2)

    def llm_flops(self, image_tokens: int) -> float:
        n = image_tokens + self.text_tokens
        layer = llm_layer_flops(n, self.text_hidden, self.text_ffn, self.text_heads, self.text_kv_heads)
        return self.text_layers * layer + 2 * self.text_hidden * self.vocab

    def ratio(self) -> float:
        return self.tower_flops([self.patches + 1] * self.vision_layers) / self.llm_flops(self.patches)

    def with_matching_depth(self) -> Geometry:
        if self.vision_layers:
            return self
        depths = [replace(self, vision_layers=depth) for depth in range(2, 64)]
        return min(depths, key=lambda g: abs(g.ratio() - self.target_ratio))


QWEN = Geometry(
    "Qwen2.5-VL-7B ratio",
    qwen25_vl_7b_ratio(),
    image_size=448,
    vision_hidden=512,
    vision_heads=8,
    text_hidden=1024,
    text_layers=12,
    text_heads=16,
    text_kv_heads=4,
    text_ffn=3072,
)
LLAVA = Geometry(
    "LLaVA-1.5-7B ratio",
    llava15_7b_ratio(),
    image_size=336,
    vision_hidden=128,
    vision_heads=4,
    text_hidden=768,
    text_layers=16,
    text_heads=12,
    text_kv_heads=12,
    text_ffn=2048,
)
QUICK = replace(
    QWEN, name="quick", image_size=112, vision_hidden=64, vision_heads=4, text_hidden=128, text_heads=8, text_kv_heads=2, text_layers=4, text_ffn=256,
    text_tokens=20,
)  # fmt: skip


def flops_of(g: Geometry, records) -> float:
    """FLOPs of a prefill that left `records` ([]: unpruned): each tower block at the tokens it ran,
    the projector at the tokens the tower returned, the LLM at the image tokens the last stage kept."""
    blocks, projected = [g.patches + 1] * g.vision_layers, g.patches
    for r in records:
        if r.stage == "in_tower":
            blocks[r.layer :] = [r.tokens_after + 1] * (g.vision_layers - r.layer)
            projected = r.tokens_after
    image_tokens = records[-1].tokens_after if records else g.patches
    return g.tower_flops(blocks, projected) + g.llm_flops(image_tokens)


def pruners_for(fraction: float, patches: int, depth: int) -> dict[str, object]:
    """Every config keeps `final` image tokens for the LLM, in a tower of `patches` patch tokens whose
    first `depth` blocks feed the features; "<in-tower> kx + <pre-LLM>" lets the tower keep k times
    `final`. The paper's ZeroTPrune steps before the 2nd-4th blocks (the first block's attention is
    still mostly positional), ToMe merges before every block (inflect < 0: more merges in early blocks,
    ToMe's decreasing schedule) or every other block (half the steps, each merging twice as many). "ZeroTPrune 4x at block 0" is one step
    before the first block, all heads fused, one PageRank iteration: on toy-vlm it ranks the objects
    where the paper's settings do not (docs/reference-models.md)."""
    final = round(fraction * patches)

    def composed(times: int, tower, pre):
        """`tower(kept)` keeping `times` x `final` tokens, then `pre`; None where the tower would keep
        the whole image (the config would be `pre` alone)."""
        kept = times * final
        return tp.compose(tower(kept), pre) if kept < patches else None

    early = tuple(range(1, min(4, depth)))
    zerotprune = partial(tp.ZeroTPrune, layers=early)
    at_block_0 = partial(tp.ZeroTPrune, layers=(0,), head_variance=None, iterations=1)
    decreasing = partial(tp.ToMe, inflect=-0.5)
    every_other = partial(tp.ToMe, layers=tuple(range(0, depth, 2)))
    configs = {
        "DivPrune": tp.DivPrune(final),
        "VisionZip": tp.VisionZip(final),
        "Uniform": tp.UniformPrune(final),
        "ZeroTPrune": zerotprune(final),
        "ToMe": tp.ToMe(final),
        "ZeroTPrune 2x + DivPrune": composed(2, zerotprune, tp.DivPrune(final)),
        "ZeroTPrune 2x + Uniform": composed(2, zerotprune, tp.UniformPrune(final)),
        "ToMe 2x + Uniform": composed(2, tp.ToMe, tp.UniformPrune(final)),
        "ToMe 2x, inflect -0.5 + Uniform": composed(2, decreasing, tp.UniformPrune(final)),
        "ToMe 2x + DivPrune": composed(2, tp.ToMe, tp.DivPrune(final)),
        "ToMe 2x, every other block + DivPrune": composed(2, every_other, tp.DivPrune(final)),
        "ToMe 4x, inflect -0.3 + DivPrune": composed(4, partial(tp.ToMe, inflect=-0.3), tp.DivPrune(final)),
        "ZeroTPrune 4x at block 0 + DivPrune": composed(4, at_block_0, tp.DivPrune(final)),
    }
    return {
        name: pruner
        for name, pruner in configs.items()
        if pruner is not None and reachable(pruner, patches, depth)
    }


def reachable(pruner, patches: int, depth: int) -> bool:
    """Whether the in-tower stage can keep its budget in this tower (ToMe merges at most half of a
    block's tokens)."""
    stage = as_composed(pruner).at("in_tower")
    try:
        return stage is None or bool(stage.schedule(patches, depth))
    except ValueError as refused:
        print(f"skipped: {refused}")
        return False


def bench(g: Geometry, budgets: list[float], rounds: int, clock) -> tuple[dict, list[dict]]:
    model, inputs = build_model(g), build_inputs(g)
    depth = g.vision_layers - 1  # LLaVA reads the second-to-last block
    configs = common.pruned_configs(budgets, lambda budget: pruners_for(budget, g.patches, depth))
    seconds, recorded = common.prefill_timings(
        model, lambda: model(**inputs), configs, rounds, clock, tower=model.model.vision_tower
    )
    base, rows = common.summarize(seconds, recorded, lambda records: flops_of(g, records), None)
    in_tower = {key for key, pruner in configs.items() if pruner is not None and is_in_tower(pruner)}
    fastest = {}  # per budget: the best speedup of a pre-LLM pruner alone
    for row in rows:
        if f"{row['pruner']}@{row['budget']}" not in in_tower:
            fastest[row["budget"]] = max(fastest.get(row["budget"], 0.0), row["speedup"])
    for row in rows:
        row["vs_pre_llm"] = row["speedup"] / fastest[row["budget"]]
    return base, [{"geometry": g.name, **row} for row in rows]


def is_in_tower(pruner) -> bool:
    return as_composed(pruner).at("in_tower") is not None


def table(g: Geometry, base: dict, rows: list[dict]) -> str:
    lines = [
        "| pruner | budget | tokens | prefill (s) | tower (s) | speedup | vs fastest pre-LLM | FLOP-ideal "
        "| speedup/ideal | selection % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| unpruned | 1.0 | {g.patches} | {base['prefill_s']:.3f} | {base['tower_s']:.3f} | 1.00 | - | 1.00 | "
        "1.00 | 0.00 |",
    ]
    lines += [
        f"| {r['pruner']} | {r['budget']} | {r['tokens']} | {r['prefill_s']:.3f} | {r['tower_s']:.3f} | "
        f"{r['speedup']:.2f} | {r['vs_pre_llm']:.2f} | {r['ideal']:.2f} | {r['ratio']:.2f} | "
        f"{r['selection_pct']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines)


def toy_accuracy(budgets: list[float], questions: int) -> list[dict]:
    """Accuracy of the configs on `questions` held-out toy-vlm questions (through the evaluation
    harness), at `budgets` of its image tokens; configs its two-block tower cannot reach are left out."""
    from tokenprune import zoo
    from tokenprune.eval import data, harness

    model, processor = zoo.load_vlm("toy-vlm")
    examples = data.vlm_examples(processor, "toy", questions)
    vision = model.config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    depth = model.config.vision_feature_layer % vision.num_hidden_layers + 1
    configs = [("unpruned", None, None)] + [
        (name, budget, pruner)
        for budget in budgets
        for name, pruner in pruners_for(budget, patches, depth).items()
    ]
    results = harness.evaluate(
        model,
        lambda ids: processor.tokenizer.decode(ids, skip_special_tokens=True),
        examples,
        configs,
        progress=False,
        depth=model.config.text_config.num_hidden_layers,
    )
    best = {}  # per budget: the best accuracy of a pre-LLM pruner alone
    for (_, budget, pruner), result in zip(configs, results):
        if pruner is not None and not is_in_tower(pruner):
            best[budget] = max(best.get(budget, 0.0), result.accuracy)
    return [
        {
            "pruner": result.pruner,
            "budget": result.budget,
            "tokens": patches if result.budget is None else round(result.budget * patches),
            "accuracy": result.accuracy,
            "of_unpruned": result.relative,
            "of_best_pre_llm": result.accuracy / best[result.budget] if result.budget in best else None,
        }
        for result in results
    ]


def toy_table(rows: list[dict]) -> str:
    lines = [
        "| pruner | budget | tokens | accuracy | % of unpruned | % of best pre-LLM |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        best = "-" if r["of_best_pre_llm"] is None else f"{100 * r['of_best_pre_llm']:.1f}%"
        budget = "-" if r["budget"] is None else r["budget"]
        lines.append(
            f"| {r['pruner']} | {budget} | {r['tokens']} | {r['accuracy']:.3f} | {100 * r['of_unpruned']:.1f}% "
            f"| {best} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = common.benchmark_parser(__doc__, runs=3, budgets="0.1,0.25", results="tower_prefill.json")
    parser.add_argument("--only", choices=["qwen", "llava"], help="run one geometry only")
    parser.add_argument(
        "--toy", type=int, default=0, metavar="N", help="also the configs' accuracy on N toy-vlm questions"
    )
    args = parser.parse_args()
    clock = common.use_threads(args.threads)
    budgets = [float(b) for b in args.budgets.split(",")]
    geometries = (
        [QUICK]
        if args.quick
        else [g for k, g in (("qwen", QWEN), ("llava", LLAVA)) if args.only in (None, k)]
    )
    results = []
    for g in geometries:
        g = g.with_matching_depth()
        base, rows = bench(g, budgets, args.runs, clock)
        print(
            f"\n{g.name}: tower/LLM FLOPs {g.ratio():.3f} (real model {g.target_ratio:.3f}); {g.patches} image "
            f"+ {g.text_tokens} text tokens; tower {g.vision_layers}x{g.vision_hidden}, LLM "
            f"{g.text_layers}x{g.text_hidden}; {common.run_conditions(args.threads, args.runs)}"
        )
        print(table(g, base, rows))
        results.append({"geometry": {**g.__dict__, "ratio": g.ratio()}, "unpruned": base, "rows": rows})
    if args.toy:
        rows = toy_accuracy(budgets, args.toy)
        print(f"\ntoy-vlm, {args.toy} held-out questions (budgets: fractions of its 64 image tokens):")
        print(toy_table(rows))
        results.append({"toy-vlm": rows})
    common.write_json(args.out, results)


if __name__ == "__main__":
    main()
