"""Runs of the unpruned and pruned models: prefill and whole-generation times from the shared
interleaved loop (`tokenprune.timing`), the greedy answer, and the sequence length at every layer."""

from __future__ import annotations

import statistics
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

import tokenprune as tp
from tokenprune import timing
from tokenprune.demos.app.models import Loaded
from tokenprune.stats import PruneRecord


@dataclass
class Measurement:
    """One configuration: the greedy answer, the timed prefills (a forward of the prompt) and whole
    generations (prefill, selection and decoding), one per round, and the sequence length at every
    decoder layer."""

    label: str
    answer: str
    prefill_runs: list[float]
    total_runs: list[float]
    layer_tokens: list[int]
    records: list[PruneRecord] = field(default_factory=list)

    @property
    def prefill_s(self) -> float:
        return statistics.median(self.prefill_runs)

    @property
    def total_s(self) -> float:
        return statistics.median(self.total_runs)

    @property
    def prefilled(self) -> int:
        """Token-layers of the prefill divided by the depth: tokens an unpruned model of equal cost would see."""
        return round(sum(self.layer_tokens) / len(self.layer_tokens))


def layer_tokens(records: list[PruneRecord], length: int, depth: int) -> list[int]:
    """Sequence length of sample 0 at every decoder layer: pre-LLM and prefill selections shorten all
    layers, in-LLM selections the layers from theirs on."""
    tokens = [length] * depth
    for record in records:
        if record.sample != 0:
            continue
        removed = record.tokens_before - record.tokens_after
        first = record.layer if record.stage == "llm" else 0
        for layer in range(first, depth):
            tokens[layer] -= removed
    return tokens


@contextmanager
def applied(model, pruner):
    """`tp.apply` for a pruner, nothing for None (the unpruned model)."""
    if pruner is None:
        yield None
        return
    with tp.apply(model, pruner) as handle:
        yield handle


def speedup_cell(base: list[float], runs: list[float]) -> str:
    """The speedup of `runs` over `base` (ratio of medians) and, in brackets, the smallest and largest
    ratio of a single round: "1.52 (1.31-1.70)"."""
    low, high = timing.spread(base, runs)
    return f"{timing.speedup(base, runs):.2f} ({low:.2f}-{high:.2f})"


@torch.no_grad()
def measure_all(
    loaded: Loaded, inputs: dict, configs: list, max_new_tokens: int, repeats: int, generations: int = 3
) -> list[Measurement]:
    """Prefill times of every (label, pruner) config over `repeats` interleaved rounds after a warm-up
    (`tokenprune.timing`: configs take turns, so changes in machine load hit them alike), then the
    whole greedy generation the same way over `generations` rounds; the answer is the last one's."""
    model = loaded.model
    length = inputs["input_ids"].shape[1]
    pruners = dict(configs)
    clock = timing.clock_for(torch.get_num_threads())
    records: dict[str, list[PruneRecord]] = {}

    @contextmanager
    def pruned(label: str):
        with applied(model, pruners[label]) as handle:
            yield
            records[label] = list(handle.stats) if handle is not None else []

    def prefill() -> None:
        model(**inputs)

    prefills = timing.interleaved(dict.fromkeys(pruners, prefill), repeats, clock=clock, setup=pruned)
    prefill_records = dict(records)
    outputs: dict[str, torch.Tensor] = {}

    def generating(label: str):
        def generate() -> None:
            outputs[label] = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=None
            )

        return generate

    totals = timing.interleaved(
        {label: generating(label) for label in pruners}, generations, clock=clock, setup=pruned
    )
    measurements = []
    for label in pruners:
        answer = loaded.tokenizer.decode(outputs[label][0, length:], skip_special_tokens=True).strip()
        tokens = layer_tokens(prefill_records[label], length, loaded.depth)
        measurements.append(
            Measurement(label, answer, prefills[label], totals[label], tokens, prefill_records[label])
        )
    return measurements
