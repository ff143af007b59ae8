"""Write your own pruner: a pre-LLM pruner that keeps the visual tokens with the largest feature norm,
applied to a tiny random LLaVA built from configs (no downloads, a few seconds on a CPU).

    python demos/custom_pruner.py

A pruner sees tensors and returns kept indices; `tp.apply` attaches any `PreLLMPruner` subclass to a
supported model. `tokenprune.registry.register_pruner("largest-norm", LargestNorm)` would also let
`tokenprune eval` and `registry.build` make it by name. Prints what `run.stats` recorded for the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import tokenprune as tp
from tokenprune.pruners import Selection, VisualTokens
from tokenprune.zoo import builders

IMAGE_TOKEN = 127
IMAGE_SIZE, PATCH_SIZE = 84, 14  # a 6 x 6 patch grid


@dataclass
class LargestNorm(tp.PreLLMPruner):
    """Keep the visual tokens whose projected features have the largest L2 norm."""

    def select(self, tokens: VisualTokens) -> Selection:
        keep = tokens.features.norm(dim=-1).topk(self.keep_count(len(tokens))).indices
        return Selection(keep.sort().values)  # ascending: kept tokens stay in grid order


def tiny_llava():
    """LLaVA-1.5's structure in miniature, random weights: a 2-layer CLIP tower and a 2-layer Llama."""
    return builders.llava(
        vision=dict(hidden=32, ffn=64, layers=2, heads=4, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        text=dict(
            vocab=128,
            hidden=64,
            ffn=128,
            layers=2,
            heads=4,
            kv_heads=2,
            max_positions=256,
            pad_token_id=0,
            eos_token_id=2,
        ),
        image_token=IMAGE_TOKEN,
    )


def main() -> list[tp.PruneRecord]:
    model = tiny_llava()
    generator = torch.Generator().manual_seed(0)
    patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    text = torch.randint(3, IMAGE_TOKEN, (8,), generator=generator)
    input_ids = torch.cat([text[:2], torch.full((patches,), IMAGE_TOKEN), text[2:]])[None]
    pixel_values = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    with tp.apply(model, LargestNorm(budget=0.25)) as run, torch.no_grad():
        output = model.generate(
            input_ids=input_ids, pixel_values=pixel_values, max_new_tokens=4, do_sample=False
        )
    for record in run.stats:
        print(
            f"{record.method} ({record.stage}): {record.tokens_before} -> {record.tokens_after} image tokens "
            f"of grid {record.grid}, kept {list(record.kept_indices)}, selected in {1e3 * record.seconds:.2f} ms"
        )
    print(f"prompt {input_ids.shape[1]} tokens; generated ids {output[0, input_ids.shape[1] :].tolist()}")
    return list(run.stats)


if __name__ == "__main__":
    main()
