"""Long context tab: LazySkip / GemFilter against the unpruned prefill, tokens at every layer."""

from __future__ import annotations

from dataclasses import dataclass

from tokenprune.demos.app.checks import PROMPT_PRUNERS, check_budget, check_names
from tokenprune.demos.app.measurement import Measurement, measure_all, speedup_cell
from tokenprune.demos.app.models import Loaded
from tokenprune.eval import harness

COLUMNS = (
    "method",
    "answer",
    "prompt tokens",
    "tokens per layer",
    "tokens prefilled",
    "TTFT ms",
    "TTFT speedup (min-max)",
    "total ms",
)


@dataclass
class LongContextResult:
    rows: list[dict]
    measurements: list[Measurement]


def run_long_context(
    lm: Loaded, prompt, pruners, budget, max_new_tokens: int = 4, repeats: int = 5, filter_layer=None
) -> LongContextResult:
    """Unpruned prefill against LazySkip / GemFilter keeping `budget` of the prompt; GemFilter selects
    at `filter_layer` (default: 40 % of the depth)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("Enter a prompt, or generate a retrieval task.")
    names = check_names(pruners, PROMPT_PRUNERS)
    budget = check_budget(budget)
    inputs = lm.tokenizer(prompt, return_tensors="pt")
    inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    length = inputs["input_ids"].shape[1]
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    if limit is not None and length + max_new_tokens > limit:
        raise ValueError(
            f"The prompt has {length} tokens; {lm.name} handles at most {limit} (with the answer)."
        )
    if length < 8:
        raise ValueError(f"The prompt has {length} tokens; prefill skipping needs a longer one.")
    if filter_layer is not None:
        filter_layer = int(filter_layer)
    configs = [("unpruned", None)] + [
        (f"{name} @ {budget:g}", harness.prompt_pruner(name, budget, lm.depth, filter_layer))
        for name in names
    ]
    measurements = measure_all(lm, inputs, configs, max_new_tokens, repeats)
    base = measurements[0]
    rows = []
    for m in measurements:
        rows.append(
            {
                "method": m.label,
                "answer": m.answer,
                "prompt tokens": length,
                "tokens per layer": " · ".join(map(str, m.layer_tokens)),
                "tokens prefilled": m.prefilled,
                "TTFT ms": round(1e3 * m.prefill_s, 2),
                "TTFT speedup (min-max)": speedup_cell(base.prefill_runs, m.prefill_runs),
                "total ms": round(1e3 * m.total_s, 2),
            }
        )
    return LongContextResult(rows, measurements)


def layer_figure(measurements: list[Measurement]):
    """Grouped bars: the sequence length each method's prefill runs through at every layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(8, 2.8))
    width = 0.8 / len(measurements)
    for i, m in enumerate(measurements):
        layers = [layer + (i - (len(measurements) - 1) / 2) * width for layer in range(len(m.layer_tokens))]
        ax.bar(layers, m.layer_tokens, width, label=m.label)
    ax.set_xticks(range(len(measurements[0].layer_tokens)))
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("tokens")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the bars
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    plt.close(figure)  # Gradio renders the figure object; pyplot need not keep it
    return figure


def retrieval_task(seed: int, length: int) -> tuple[str, str]:
    """(prompt, answer) of a key-value retrieval task the toy LM was trained on."""
    from tokenprune.zoo import retrieval

    sample = retrieval.sample(int(seed), 0, int(length))
    return sample.prompt, " ".join(sample.answer)
