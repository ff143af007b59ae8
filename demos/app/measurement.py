"""Runs of the unpruned and pruned models: prefill times from the shared interleaved loop
(`tokenprune.timing`), one greedy generation each, and the sequence length at every layer."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

import tokenprune as tp
from tokenprune import timing
from tokenprune.demos.app.models import Loaded
from tokenprune.stats import PruneRecord


@dataclass
class Measurement:
    """One model run: the answer, median prefill time (a forward of the prompt), the time of the whole
    greedy generation, and the sequence length at every decoder layer."""

    label: str
    answer: str
    prefill_s: float
    total_s: float
    layer_tokens: list[int]
    records: list[PruneRecord] = field(default_factory=list)

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


@torch.no_grad()
def measure_all(
    loaded: Loaded, inputs: dict, configs: list, max_new_tokens: int, repeats: int
) -> list[Measurement]:
    """Median prefill time of every (label, pruner) config over `repeats` interleaved rounds after a
    warm-up (`tokenprune.timing`: configs take turns, so changes in machine load hit them alike), then
    one greedy generation each, timed on the same clock."""
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

    seconds = timing.interleaved(dict.fromkeys(pruners, prefill), repeats, clock=clock, setup=pruned)
    prefill_s = timing.medians(seconds)
    measurements = []
    for label, pruner in configs:
        with applied(model, pruner):
            started = clock()
            output = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=None
            )
            total = clock() - started
        answer = loaded.tokenizer.decode(output[0, length:], skip_special_tokens=True).strip()
        tokens = layer_tokens(records[label], length, loaded.depth)
        measurements.append(Measurement(label, answer, prefill_s[label], total, tokens, records[label]))
    return measurements
