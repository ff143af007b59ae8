"""`tokenprune eval vlm|lm`: accuracy vs budget for each pruner, as a table, JSON and a PNG plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenprune import registry

# which registered pruners a task evaluates: vlm drops visual tokens, lm prompt tokens
TASK_DROPS = {"vlm": "visual", "lm": "prompt"}


def pruner_names(task: str) -> tuple[str, ...]:
    """The registered pruners `task` ("vlm" or "lm") evaluates, in registration order."""
    return registry.pruner_names(drops=TASK_DROPS[task])


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None
    if not all(0.0 < v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"budgets must be fractions in (0, 1], got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "task", choices=tuple(TASK_DROPS), help="vlm: visual pruners; lm: prompt (prefill) pruners"
    )
    parser.add_argument(
        "--model",
        default="toy",
        help="checkpoint path or hub id; 'toy' = the committed toy-vlm (toy-vlm-2 with --data toy2) / toy-lm",
    )
    parser.add_argument(
        "--data",
        default="toy",
        help="'toy' or 'toy2' (held-out generated questions; vlm toy2: the cluttered 256-token scenes) or a JSONL file",
    )
    parser.add_argument(
        "--pruners",
        type=_names,
        default=None,
        help=f"vlm: {','.join(pruner_names('vlm'))}; lm: {','.join(pruner_names('lm'))}",
    )
    parser.add_argument(
        "--budgets",
        type=_floats,
        default=None,
        help="fractions kept (vlm: 0.1,0.25,0.5; lm: 0.1,0.3,0.5); "
        "for *-adaptive before the LLM, the mean over calibration images",
    )
    parser.add_argument("--limit", type=int, default=200, help="questions evaluated")
    parser.add_argument("--prompt", default="<image> {question}", help="vlm prompt template with {question}")
    parser.add_argument("--max-new-tokens", type=int, default=4, help="vlm answer length cap")
    parser.add_argument(
        "--lengths",
        type=lambda t: tuple(int(v) for v in t.split(",")),
        default=(512, 1024, 2048),
        help="lm toy context lengths",
    )
    parser.add_argument(
        "--filter-layer",
        type=int,
        default=None,
        help="lm: GemFilter's selection layer (default: 40%% of the depth, 13 of 32 layers)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results"), help="directory for JSON and PNG"
    )
    parser.add_argument("--no-progress", action="store_true")


# the committed model that answers each generated question set
TOY_MODELS = {("vlm", "toy"): "toy-vlm", ("vlm", "toy2"): "toy-vlm-2", ("lm", "toy"): "toy-lm"}


def resolve_model(task: str, model: str, data: str) -> str:
    """`model`, or for "toy" the name of the committed model trained on `data`'s questions."""
    if model != "toy":
        return model
    if (task, data) in TOY_MODELS:
        return TOY_MODELS[task, data]
    return TOY_MODELS[task, "toy"]


def _load_vlm(model: str, device: str):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from tokenprune import zoo

    path = zoo.path(model) if model in zoo.MODELS else model
    return AutoModelForImageTextToText.from_pretrained(path).to(device).eval(), AutoProcessor.from_pretrained(
        path
    )


def _load_lm(model: str, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokenprune import zoo

    path = zoo.path(model) if model in zoo.MODELS else model
    return AutoModelForCausalLM.from_pretrained(path).to(device).eval(), AutoTokenizer.from_pretrained(path)


def run(args: argparse.Namespace) -> int:
    import tokenprune as tp
    from tokenprune.eval import data, harness

    if args.limit < 1:
        raise SystemExit(f"--limit must be >= 1, got {args.limit}")
    name = resolve_model(args.task, args.model, args.data)
    if args.task == "vlm":
        model, processor = _load_vlm(name, args.device)
        tokenizer = processor.tokenizer
        examples = data.vlm_examples(
            processor, args.data, args.limit, args.prompt, args.max_new_tokens, args.device
        )
        depth = model.config.text_config.num_hidden_layers
        names, budgets = args.pruners or pruner_names("vlm"), args.budgets or (0.1, 0.25, 0.5)
        build = harness.visual_pruner
    else:
        model, tokenizer = _load_lm(name, args.device)
        examples = data.lm_examples(tokenizer, args.data, args.limit, args.lengths, args.device)
        depth = model.config.num_hidden_layers
        names, budgets = args.pruners or pruner_names("lm"), args.budgets or (0.1, 0.3, 0.5)

        def build(name: str, budget: float, depth: int):
            return harness.prompt_pruner(name, budget, depth, args.filter_layer)

    configs = [("unpruned", None, None)] + [(n, b, build(n, b, depth)) for n in names for b in budgets]
    if args.task == "vlm" and any(isinstance(pruner, tp.Adaptive) for _, _, pruner in configs):
        # the toys calibrate on scenes of another split; a JSONL file on its own images
        calibration = (
            data.vlm_examples(
                processor,
                args.data,
                data.CALIBRATION_IMAGES,
                args.prompt,
                args.max_new_tokens,
                args.device,
                seed=data.CALIBRATION_SEED,
            )
            if args.data in data.TOY_SCENES
            else examples
        )
        configs = harness.calibrated(model, calibration, configs)
    results = harness.evaluate(
        model,
        lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        examples,
        configs,
        progress=not args.no_progress,
        depth=depth,
    )
    print(harness.markdown(results))
    if any(r.per_region for r in results):
        print("\nBy image region of the answer:\n")
        print(harness.markdown(results, by="region"))
    if any(r.tokens is not None for r in results):
        print("\nPareto front (fewest mean tokens per decoder layer for the accuracy):\n")
        print(harness.front_markdown(results))
    if harness.varying_budgets(results):
        print("\nTokens kept per question, where the budget varies:\n")
        print(harness.budgets_markdown(results))
    suffix = "" if args.data == "toy" else f"_{Path(args.data).stem}"
    stem, title = f"accuracy_vs_budget_{args.task}{suffix}", f"{args.task}: {name}, {len(examples)} questions"
    meta = {"task": args.task, "model": name, "data": args.data, "questions": len(examples)}
    harness.write_json(results, args.out / f"{stem}.json", meta)
    harness.plot(results, args.out / f"{stem}.png", title)
    written = [args.out / f"{stem}.json", args.out / f"{stem}.png"]
    if any(r.tokens is not None for r in results):
        written.append(args.out / f"accuracy_vs_tokens_{args.task}{suffix}.png")
        harness.plot_tokens(results, written[-1], title)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
