"""Select-then-prefill (the "prefill" stage, GemFilter-style) on a decoder stack.

At prefill, a pre-hook on the text model first runs the model itself up to the pruner's filter
layer (a temporary pre-hook on that layer stops the forward by raising `_FilterReached`, so no
upstream code is copied and nothing is cached), scores the prompt there, then shortens the inputs
with `pack()` and lets the real forward run on the selected tokens only. Decoding steps get masks
and positions for the shortened cache.
"""

from __future__ import annotations

import time

import torch

from tokenprune.adapters.transformers import compat
from tokenprune.adapters.transformers.base import PrefillTracker, SelectionLog, drop_unselected
from tokenprune.adapters.transformers.decoder import DecoderStack, RecomputedRows
from tokenprune.adapters.transformers.sequence import pack
from tokenprune.compose import Composed
from tokenprune.pruners.prefill import PrefillPruner, PromptContext
from tokenprune.stats import RunStats


class _FilterReached(Exception):
    """Carries the hidden states entering the filter layer out of the interrupted forward."""

    def __init__(self, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]) -> None:
        super().__init__("filter layer reached")
        self.hidden = hidden
        self.position_embeddings = position_embeddings


def prefill_engine(stack: DecoderStack, pruner: Composed, stats: RunStats) -> PrefillSelectEngine | None:
    """The engine for the composed pruner's "prefill" stage, or None if it has none."""
    selector = pruner.at("prefill")
    if selector is None:
        return None
    if pruner.at("llm") is not None:
        raise ValueError(
            f"{selector.name} chooses the tokens every layer prefills and cannot be composed with the "
            f"in-LLM pruner {pruner.at('llm').name}; use one of them"
        )
    return PrefillSelectEngine(stack, selector, stats)


class PrefillSelectEngine:
    def __init__(self, stack: DecoderStack, pruner: PrefillPruner, stats: RunStats) -> None:
        if not 0 <= pruner.filter_layer < len(stack.layers):
            raise ValueError(
                f"{pruner.name}: filter_layer must lie in [0, {len(stack.layers) - 1}] for this model, "
                f"got {pruner.filter_layer}"
            )
        self.stack = stack
        self.pruner = pruner
        self.stats = stats
        self.reindex = pruner.positions == "reindex"
        self.prefill_tracker = PrefillTracker()
        self._filtering = False

    def install(self, adapter) -> None:
        adapter.hook_before(self.stack.model, self._before_model)
        adapter.hook_after(self.stack.model, self._after_model)

    def _before_model(self, module, args, kwargs):
        if self._filtering:
            return None
        if args:
            raise ValueError("tokenprune needs the text model's inputs as keyword arguments")
        past = self.prefill_tracker.cached_tokens(kwargs)
        if past > 0:
            return self.prefill_tracker.decode_step(args, kwargs, past)
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise ValueError("tokenprune needs a 2-D attention mask (batch, length); got a prepared 4-D mask")
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            embeds = module.get_input_embeddings()(kwargs["input_ids"])
        batch, length = embeds.shape[:2]
        valid = (
            mask.bool()
            if mask is not None
            else torch.ones(batch, length, dtype=torch.bool, device=embeds.device)
        )
        inputs = {**kwargs, "input_ids": None, "inputs_embeds": embeds}
        started = time.perf_counter()
        keep = self._select(module, inputs, valid)
        seconds = time.perf_counter() - started
        log = SelectionLog(self.stats, "prefill", self.pruner.name, self.pruner.filter_layer)
        for b in range(batch):
            real = valid[b].nonzero().squeeze(1)
            log.add(
                b, 0, len(real), torch.searchsorted(real, keep[b].nonzero().squeeze(1)), None, seconds / batch
            )
        if bool((keep == valid).all()):
            return args, inputs  # nothing dropped: the forward runs exactly as without pruning
        packed = pack(embeds, keep, mask, kwargs.get("position_ids"), self.reindex)
        self.prefill_tracker.prefill = packed.prefill_state(length, self.reindex)
        return args, {
            **inputs,
            "inputs_embeds": packed.embeds,
            "attention_mask": packed.mask,
            "position_ids": packed.position_ids,
        }

    def _after_model(self, module, args, kwargs, output):
        if self._filtering:
            return
        self.prefill_tracker.record_cache(output)

    def _select(self, module, inputs: dict, valid: torch.Tensor) -> torch.Tensor:
        """keep (B, L): the valid positions the pruner's selection leaves."""
        layer = self.pruner.filter_layer

        def stop(_module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            raise _FilterReached(hidden, kwargs["position_embeddings"])

        handle = self.stack.layers[layer].register_forward_pre_hook(stop, with_kwargs=True)
        self._filtering = True
        reached = None
        try:
            with torch.no_grad():
                module(**compat.without_cache(inputs))
        except _FilterReached as signal:
            reached = signal
        finally:
            self._filtering = False
            handle.remove()
        if reached is None:
            raise RuntimeError(f"the text model never reached decoder layer {layer}")
        with torch.no_grad():
            rows = RecomputedRows(self.stack, layer, reached.hidden, reached.position_embeddings, valid)
            # a prompt's final token predicts the next one and is always prefilled
            candidates = [valid[b].nonzero().squeeze(1)[:-1] for b in range(valid.shape[0])]
            lengths = [int(v.sum()) for v in valid]
            kept = self.pruner.select_prompt(PromptContext(rows, candidates, lengths))
        keep = valid.clone()
        for b, (positions, local) in enumerate(zip(candidates, kept)):
            drop_unselected(keep, b, positions, local)
        return keep
