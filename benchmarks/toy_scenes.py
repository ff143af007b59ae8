"""Draw a held-out scene of each reference VLM and the image patches pruners keep on toy-vlm-2.

    python benchmarks/toy_scenes.py [--pruners divprune,cdpruner] [--budget 0.1] [--index 2]
        [--out docs/toy-vlm-2-scenes.png] [--model DIR]

Panels: a toy-vlm scene, then one toy-vlm-2 scene unpruned and with each pruner's kept patches
outlined (question and the model's answer under each panel).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import tokenprune as tp
from tokenprune import registry, zoo
from tokenprune.zoo import scenes, scenes2, train


def answer(model, processor, image, question: str, pruner=None) -> tuple[str, tuple[int, ...]]:
    """The greedy answer and the kept image-token indices (all of them unpruned)."""
    inputs = processor(text=train.vlm_prompt(question), images=image, return_tensors="pt")
    length = inputs["input_ids"].shape[1]
    with torch.no_grad():
        if pruner is None:
            out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
            kept = tuple(range(scenes2.SIDE**2))
        else:
            with tp.apply(model, pruner) as run:
                out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
            kept = run.stats[0].kept_indices
    return processor.tokenizer.decode(out[0, length:], skip_special_tokens=True), kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pruners", default="divprune,cdpruner")
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--index", type=int, default=2, help="held-out sample of toy-vlm-2 (2: a 'where')")
    parser.add_argument("--out", type=Path, default=Path("docs/toy-vlm-2-scenes.png"))
    parser.add_argument(
        "--model", default=None, help="checkpoint directory (default: the committed toy-vlm-2)"
    )
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    if args.model is None:
        model, processor = zoo.load_vlm("toy-vlm-2")
    else:
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(args.model).eval()
        processor = AutoProcessor.from_pretrained(args.model)
    depth = model.config.text_config.num_hidden_layers
    first = scenes.sample(train.HELD_OUT_SEED, args.index)
    second = scenes2.sample(train.HELD_OUT_SEED, args.index)
    image = scenes2.to_pil(scenes2.render([second.scene])[0])
    names = [n for n in args.pruners.split(",") if n]
    figure, axes = plt.subplots(1, 2 + len(names), figsize=(3.3 * (2 + len(names)), 3.9))
    axes[0].imshow(scenes.render([first.scene])[0].numpy())
    axes[0].set_title(f"toy-vlm: 64 tokens\n{first.question} {first.answer}", fontsize=8)
    runs = [("unpruned", None)] + [(n, registry.build(n, args.budget, depth)) for n in names]
    for ax, (name, pruner) in zip(axes[1:], runs):
        said, kept = answer(model, processor, image, second.question, pruner)
        ax.imshow(image)
        if pruner is not None:
            for index in kept:
                row, col = divmod(index, scenes2.SIDE)
                ax.add_patch(
                    patches.Rectangle(
                        (col * scenes2.PATCH, row * scenes2.PATCH),
                        scenes2.PATCH,
                        scenes2.PATCH,
                        fill=False,
                        edgecolor="white",
                        linewidth=1.4,
                    )
                )
        label = "toy-vlm-2: 256 tokens" if pruner is None else f"{name}: {len(kept)} tokens"
        ax.set_title(f"{label}\n{second.question} -> {said} ({second.answer})", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
