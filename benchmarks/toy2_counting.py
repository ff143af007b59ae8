"""How toy-vlm-2 counts objects from a subset of its image tokens: the `total` questions ("how many
objects ?") answered with chosen patches kept, and the signed error of the count.

    python benchmarks/toy2_counting.py [--seed 3000] [--questions 400] [--budget 26]

Kept sets: one patch per object (the one it covers most) or every patch an object covers at least 10 %
of, each with some random patches no object touches; then DivPrune, CDPruner and two-sided CDPruner
at `--budget`. Then the mean error by the number of large (2x2-patch) objects in the scene. Last,
accuracy on every question of the split at `--budget` tokens for the same pruners and a selection told
where the objects are: every object patch, then DivPrune's farthest-point picks. Positions are kept, as the
pruners keep them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np
import torch

import tokenprune as tp
from tokenprune import registry, zoo
from tokenprune.eval.harness import is_correct, normalise
from tokenprune.pruners.base import PreLLMPruner, Selection
from tokenprune.zoo import scenes2, train

PRUNERS = ("divprune", "cdpruner", "cdpruner-two-sided")


@dataclass
class ObjectsFirst(PreLLMPruner):
    """Keeps the patches in `objects` (set before each question), then farthest-point picks on
    cosine distance (DivPrune's rule) up to the budget."""

    objects: list[int] = field(default_factory=list)

    def select(self, tokens):
        keep = self.keep_count(len(tokens))
        picks = sorted(set(self.objects))[:keep]
        unit = torch.nn.functional.normalize(tokens.features.float(), dim=-1)
        distance = (1 - unit @ unit[picks].T).amin(dim=1)
        distance[picks] = -1
        while len(picks) < keep:
            pick = int(distance.argmax())
            picks.append(pick)
            distance = torch.minimum(distance, 1 - unit @ unit[pick])
            distance[pick] = -1
        return Selection(torch.tensor(sorted(picks), device=tokens.features.device))


@dataclass
class Chosen(PreLLMPruner):
    """Keeps the image tokens in `indices` (set before each question)."""

    budget: float = 1.0
    indices: list[int] = field(default_factory=list)

    def select(self, tokens):
        return Selection(torch.tensor(sorted(self.indices), device=tokens.features.device))


def cover(scene: scenes2.Scene) -> list[torch.Tensor]:
    """Per object, the share of each patch it covers (256,)."""
    x, y = scenes2._grid("cpu")
    side, patch = scenes2.SIDE, scenes2.PATCH
    return [
        scenes2._shape_mask(o, x, y).float().view(side, patch, side, patch).mean(dim=(1, 3)).flatten()
        for o in scene.objects
    ]


def count_error(model, processor, sample, image, pruner, kept: list | None = None) -> int | None:
    """The model's count minus the true one (None if it did not answer a number); appends the kept
    token indices to `kept`."""
    inputs = processor(text=train.vlm_prompt(sample.question), images=image, return_tensors="pt")
    length = inputs["input_ids"].shape[1]
    with torch.no_grad(), tp.apply(model, pruner) as run:
        out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    if kept is not None:
        kept.append(set(run.stats[0].kept_indices))
    words = normalise(processor.tokenizer.decode(out[0, length:], skip_special_tokens=True))
    return int(words[0]) - int(sample.answer) if words and words[0].isdigit() else None


def row(name: str, errors: list[int | None]) -> str:
    known = np.array([e for e in errors if e is not None])
    cells = [
        name,
        f"{np.mean([e == 0 for e in errors]):.3f}",
        f"{known.mean():+.2f}",
        f"{np.mean(known > 0):.2f}",
        f"{np.mean(known < 0):.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3000, help="split of the scenes")
    parser.add_argument(
        "--questions", type=int, default=400, help="questions of the split; every fifth is `total`"
    )
    parser.add_argument("--budget", type=int, default=26, help="tokens each pruner keeps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, processor = zoo.load_vlm("toy-vlm-2")
    picked = [s for s in scenes2.samples(args.seed, args.questions) if s.kind == "total"]
    images = [scenes2.to_pil(image) for image in scenes2.render([s.scene for s in picked])]
    covers = [cover(s.scene) for s in picked]
    generator = torch.Generator().manual_seed(0)
    chosen = Chosen()

    def kept_sets(patches: str, background: int) -> list[list[int]]:
        sets = []
        for shares in covers:
            touched = set(torch.cat([torch.nonzero(c > 0).flatten() for c in shares]).tolist())
            if patches == "one":
                kept = [int(c.argmax()) for c in shares]
            else:
                kept = torch.cat([torch.nonzero(c >= 0.1).flatten() for c in shares]).tolist()
            free = [i for i in range(scenes2.SIDE**2) if i not in touched]
            order = torch.randperm(len(free), generator=generator)[:background].tolist()
            sets.append(sorted(set(kept) | {free[i] for i in order}))
        return sets

    def errors_for(sets: list[list[int]]) -> list[int | None]:
        errors = []
        for sample, image, kept in zip(picked, images, sets):
            chosen.indices = kept
            errors.append(count_error(model, processor, sample, image, chosen))
        return errors

    print(f"{len(picked)} `total` questions of split {args.seed}\n")
    print("| kept | accuracy | mean error | over | under |\n|---|---|---|---|---|")
    print(row("all 256", errors_for([list(range(scenes2.SIDE**2))] * len(picked))))
    by_large = {}
    for patches in ("one", "all"):
        for background in (0, 20, 80, 240):
            errors = errors_for(kept_sets(patches, background))
            what = "one patch per object" if patches == "one" else "every object patch"
            print(row(f"{what} + {background} background", errors))
            if background == 20:
                by_large[what] = errors
    touched_all = {}
    for name in PRUNERS:
        pruner, kept = registry.build(name, args.budget), []
        print(
            row(
                f"{name} {args.budget}",
                [count_error(model, processor, *q, pruner, kept) for q in zip(picked, images)],
            )
        )
        touched_all[name] = sum(
            all(kept_set & set(torch.nonzero(c >= 0.1).flatten().tolist()) for c in shares)
            for kept_set, shares in zip(kept, covers)
        )
    print(
        "\nScenes where the pruner keeps a patch of every object (one it covers >= 10 %): "
        + ", ".join(f"{n} {k} of {len(picked)}" for n, k in touched_all.items())
    )
    large = [sum(o.size == "large" for o in s.scene.objects) for s in picked]
    print("\nMean error by large objects in the scene (+ 20 background patches):\n")
    print("| large objects | scenes | " + " | ".join(by_large) + " |\n|---|---|---|---|")
    for count in sorted(set(large)):
        chosen_rows = [i for i, n in enumerate(large) if n == count]
        means = [
            np.mean([e for i, e in enumerate(errs) if i in chosen_rows and e is not None])
            for errs in by_large.values()
        ]
        print(f"| {count} | {len(chosen_rows)} | " + " | ".join(f"{m:+.2f}" for m in means) + " |")

    every = scenes2.samples(args.seed, args.questions)
    every_images = [scenes2.to_pil(image) for image in scenes2.render([s.scene for s in every])]
    told = ObjectsFirst(args.budget)
    configs = [(name, registry.build(name, args.budget)) for name in PRUNERS]
    configs.append(("every object patch + farthest points", told))
    kinds = scenes2.QUESTION_TYPES
    print(f"\nAccuracy on the {len(every)} questions of split {args.seed} at {args.budget} tokens:\n")
    print("| kept | all | " + " | ".join(kinds) + " |\n|" + "---|" * (len(kinds) + 2))
    for name, pruner in configs:
        right: dict[str, list[bool]] = {kind: [] for kind in kinds}
        for sample, image in zip(every, every_images):
            told.objects = torch.cat(
                [torch.nonzero(c >= 0.1).flatten() for c in cover(sample.scene)]
            ).tolist()
            inputs = processor(text=train.vlm_prompt(sample.question), images=image, return_tensors="pt")
            length = inputs["input_ids"].shape[1]
            with torch.no_grad(), tp.apply(model, pruner):
                out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
            answer = processor.tokenizer.decode(out[0, length:], skip_special_tokens=True)
            right[sample.kind].append(is_correct(answer, sample.answer))
        overall = np.mean([ok for oks in right.values() for ok in oks])
        print(f"| {name} | {overall:.3f} | " + " | ".join(f"{np.mean(right[k]):.3f}" for k in kinds) + " |")


if __name__ == "__main__":
    main()
