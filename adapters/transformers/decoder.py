"""In-LLM pruning for Llama-style decoder stacks, shared by every family whose text model has
`layers`, `rotary_emb` and attention modules with `q_proj`/`k_proj`.

Hooks on the decoder layers shorten the hidden states before the pruner's layers and keep every
later layer consistent: gathered (or recomputed) position embeddings, position ids and masks at
prefill, and masks over exactly the keys each layer cached during decoding.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tokenprune.adapters.transformers import compat
from tokenprune.adapters.transformers.base import PrefillTracker, SelectionLog, drop_unselected
from tokenprune.attention import attention_logits
from tokenprune.pruners.base import LayerContext, LayerPruner
from tokenprune.stats import RunStats


@dataclass
class TokenGroups:
    """Prunable groups of one prefill, in language-model input coordinates (see LayerContext)."""

    positions: list[list[torch.Tensor]]
    origins: list[list[torch.Tensor]]
    grids: list[list[tuple[int, ...] | None]]

    @classmethod
    def whole(
        cls, positions: list[list[torch.Tensor]], grids: list[list[tuple[int, ...] | None]]
    ) -> TokenGroups:
        """Groups none of whose tokens were pruned yet: origins count 0.. along the positions."""
        origins = [[torch.arange(len(p), device=p.device) for p in per] for per in positions]
        return cls(positions, origins, grids)


class DecoderStack:
    """The parts of a Llama-style text model that pruning needs. Families with other rotary
    embeddings (M-RoPE) subclass and override `rope` and `rotate`."""

    def __init__(self, text_model: nn.Module) -> None:
        self.model = text_model
        self.layers = text_model.layers
        self.rotary = text_model.rotary_emb

    def rope(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rotary(hidden, position_ids)

    def rotate(
        self, attention: nn.Module, states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        apply_rotary = sys.modules[type(attention).__module__].apply_rotary_pos_emb
        return apply_rotary(states, states, cos, sin)[0]

    def project(
        self,
        layer_index: int,
        hidden: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        rows: torch.Tensor,
        rope: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Queries of `rows` (B, Q) and keys of all tokens of a layer, as its attention computes them."""
        layer = self.layers[layer_index]
        attention = layer.self_attn
        x = layer.input_layernorm(hidden)
        batch, length, width = x.shape
        head_dim = attention.head_dim
        x_rows = x.gather(1, rows[..., None].expand(-1, -1, width))
        queries = attention.q_proj(x_rows).view(batch, rows.shape[1], -1, head_dim)
        keys = attention.k_proj(x).view(batch, length, -1, head_dim)
        if hasattr(attention, "q_norm"):  # Qwen3 normalises per head before RoPE
            queries, keys = attention.q_norm(queries), attention.k_norm(keys)
        queries, keys = queries.transpose(1, 2), keys.transpose(1, 2)
        if rope:
            cos, sin = (t.expand(batch, *t.shape[1:]) for t in position_embeddings)
            pick = rows[..., None].expand(-1, -1, cos.shape[-1])
            queries = self.rotate(attention, queries, cos.gather(1, pick), sin.gather(1, pick))
            keys = self.rotate(attention, keys, cos, sin)
        return queries, keys, attention.scaling


class RecomputedRows:
    """AttentionRows of one layer for the last real tokens of each sample, computed on demand."""

    def __init__(self, stack, layer_index, hidden, position_embeddings, valid) -> None:
        self._args = (stack, layer_index, hidden, position_embeddings)
        self.valid = valid
        self._cache: dict[tuple[int, bool], torch.Tensor] = {}

    def logits(self, window: int = 1, rope: bool = True) -> torch.Tensor:
        key = (window, rope)
        if key not in self._cache:
            stack, layer_index, hidden, position_embeddings = self._args
            length = self.valid.shape[1]
            index = torch.arange(length, device=self.valid.device)
            last = torch.where(self.valid, index, -1).amax(dim=1)
            rows = (last[:, None] - torch.arange(window - 1, -1, -1, device=last.device)).clamp(min=0)
            queries, keys, scale = stack.project(layer_index, hidden, position_embeddings, rows, rope)
            key_mask = self.valid[:, None, :] & (index[None, None, :] <= rows[:, :, None])
            self._cache[key] = attention_logits(queries, keys, scale, key_mask)
        return self._cache[key]

    def keys(self, rope: bool = True) -> torch.Tensor:
        stack, layer_index, hidden, position_embeddings = self._args
        first = torch.zeros(hidden.shape[0], 1, dtype=torch.long, device=hidden.device)
        return stack.project(layer_index, hidden, position_embeddings, first, rope)[1]


@dataclass
class Stage:
    """Tokens that layers from `layer` on keep, after one selection step."""

    layer: int
    index: torch.Tensor  # (B, L_s) positions in the language-model input; padding slots repeat 0
    valid: torch.Tensor  # (B, L_s) real tokens
    dropped: torch.Tensor  # (B,) real tokens removed up to this stage
    needs_mask: bool


@dataclass
class Prefill:
    """What decoding after a pruned prefill must know."""

    length: int
    valid: torch.Tensor
    position_ids: torch.Tensor
    stages: list[Stage]


def _causal_mask(kv_valid: torch.Tensor, query_count: int) -> torch.Tensor:
    """(B, 1, Q, K) boolean mask: the Q queries are the last Q keys; padding keys are hidden and a
    query with no visible key sees itself (its output is discarded, but must not be NaN)."""
    keys = kv_valid.shape[1]
    key_index = torch.arange(keys, device=kv_valid.device)
    query_index = key_index[keys - query_count :]
    allowed = (key_index[None, :] <= query_index[:, None])[None] & kv_valid[:, None, :]
    allowed |= (key_index[None, :] == query_index[:, None])[None] & ~allowed.any(-1, keepdim=True)
    return allowed[:, None]


def _pad_left(rows: list[torch.Tensor], fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    index = torch.full((len(rows), width), fill, dtype=torch.long, device=rows[0].device)
    valid = torch.zeros(len(rows), width, dtype=torch.bool, device=rows[0].device)
    for b, r in enumerate(rows):
        if len(r):
            index[b, width - len(r) :] = r
            valid[b, width - len(r) :] = True
    return index, valid


class LayerPruningEngine:
    """Runs one LayerPruner on a decoder stack. `groups_for(valid)` tells it, at each prefill, which
    tokens may be pruned (None: leave this forward alone)."""

    def __init__(
        self,
        stack: DecoderStack,
        pruner: LayerPruner,
        stats: RunStats,
        groups_for: Callable[[torch.Tensor], TokenGroups | None],
    ) -> None:
        pruner = pruner.for_depth(len(stack.layers))
        pruner.check_layers(len(stack.layers))
        self.stack = stack
        self.pruner = pruner
        self.stats = stats
        self.groups_for = groups_for
        self.prune_at = pruner.layers()
        self.reindex = pruner.positions == "reindex"
        self.prefill_tracker = PrefillTracker()
        self._step: dict = {}
        self.implementation = self._check_implementation()

    @property
    def prefill(self) -> Prefill | None:
        return self.prefill_tracker.prefill

    def _check_implementation(self) -> str:
        return compat.check_mask_implementation(self.stack.layers[0].self_attn, self.pruner.name)

    def install(self, adapter) -> None:
        adapter.hook_before(self.stack.model, self._before_model)
        adapter.hook_after(self.stack.model, self._after_model)
        first = self.prune_at[0]
        for i in range(first - 1, len(self.stack.layers)):
            adapter.hook_before(self.stack.layers[i], self._layer_hook(i))

    # -- whole text model ------------------------------------------------------------------
    def _before_model(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        tokens = (
            embeds if embeds is not None else (kwargs.get("input_ids") if "input_ids" in kwargs else args[0])
        )
        batch, length = tokens.shape[:2]
        past = self.prefill_tracker.cached_tokens(kwargs)
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise ValueError("tokenprune needs a 2-D attention mask (batch, length); got a prepared 4-D mask")
        position_ids = kwargs.get("position_ids")
        if position_ids is None:
            position_ids = (torch.arange(length, device=tokens.device) + past)[None]
        self._step = {"cache": {}}
        if past == 0:
            self.implementation = self._check_implementation()  # the model may have been switched since
            valid = (
                mask.bool()
                if mask is not None
                else torch.ones(batch, length, dtype=torch.bool, device=tokens.device)
            )
            groups = self.groups_for(valid)
            if groups is not None and any(len(g) for g in groups.positions):
                # M-RoPE ids carry leading dims (3, B, L)
                full = position_ids.expand(*position_ids.shape[:-2], batch, length)
                self.prefill_tracker.prefill = Prefill(length, valid, full, [])
                self._step.update(mode="prefill", groups=groups, valid=valid)
            return None
        if not self.prefill_tracker.continues(kwargs):
            return None
        generated = past + length - self.prefill.length
        new_valid = (
            mask[:, self.prefill.length :].bool()
            if mask is not None
            else torch.ones(batch, generated, dtype=torch.bool, device=tokens.device)
        )
        self._step.update(mode="decode", new_valid=new_valid, query_count=length, position_ids=position_ids)
        return None

    def _after_model(self, module, args, kwargs, output):
        if self._step.get("mode") == "prefill":
            self.prefill_tracker.record_cache(output)
        self._step = {}

    # -- decoder layers ----------------------------------------------------------------------
    def _layer_hook(self, i: int):
        def hook(module, args, kwargs):
            mode = self._step.get("mode")
            if mode is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            if mode == "prefill" and i in self.prune_at:
                hidden = self._select(i, hidden)
            stage = self._stage_for(i)
            if stage is not None:
                kwargs = self._stage_kwargs(stage, hidden, kwargs, mode)
                if mode == "decode":
                    self._check_cached_length(i, stage)
            if mode == "prefill" and i + 1 in self.prune_at:
                self._step["captured"] = (hidden, kwargs["position_embeddings"])
            if args:
                args = (hidden, *args[1:])
            else:
                kwargs["hidden_states"] = hidden
            return args, kwargs

        return hook

    def _stage_for(self, i: int) -> Stage | None:
        stages = self.prefill.stages if self.prefill is not None else []
        current = [s for s in stages if s.layer <= i]
        return current[-1] if current else None

    def _select(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        groups: TokenGroups = self._step["groups"]
        previous = self._stage_for(layer)
        valid = previous.valid if previous is not None else self._step["valid"]
        captured_hidden, captured_pos = self._step.pop("captured")
        rows = RecomputedRows(self.stack, layer - 1, captured_hidden, captured_pos, valid)
        step = self.prune_at.index(layer)
        started = time.perf_counter()
        kept_local = self.pruner.select_layer(
            LayerContext(
                layer,
                step,
                rows,
                groups.positions,
                groups.origins,
                groups.grids,
                valid,
                states=lambda: self.stack.model.norm(hidden),
            )
        )
        seconds = time.perf_counter() - started
        batch, length = valid.shape
        keep = valid.clone()
        log = SelectionLog(self.stats, "llm", self.pruner.name, layer)
        seconds_per_group = seconds / max(sum(len(g) for g in groups.positions), 1)
        for b, per_group in enumerate(groups.positions):
            for g, (positions, local) in enumerate(zip(per_group, kept_local[b])):
                drop_unselected(keep, b, positions, local)
                log.add(
                    b, g, len(positions), groups.origins[b][g][local], groups.grids[b][g], seconds_per_group
                )
        if bool((keep == valid).all()):
            return hidden  # nothing dropped: later layers run exactly as without pruning
        kept_rows = [keep[b].nonzero().squeeze(1) for b in range(batch)]
        local_index, new_valid = _pad_left(kept_rows)
        base = (
            previous.index
            if previous is not None
            else torch.arange(length, device=keep.device).expand(batch, -1)
        )
        lm_index = base.gather(1, local_index)
        dropped = self._step["valid"].sum(1) - new_valid.sum(1)
        self.prefill.stages.append(
            Stage(layer, lm_index, new_valid, dropped, needs_mask=not bool(new_valid.all()))
        )
        # positions of the surviving group tokens in the new coordinates
        new_positions, new_origins = [], []
        for b in range(batch):
            offset = local_index.shape[1] - len(kept_rows[b])
            per_positions, per_origins = [], []
            for positions, origins, local in zip(groups.positions[b], groups.origins[b], kept_local[b]):
                per_positions.append(torch.searchsorted(kept_rows[b], positions[local]) + offset)
                per_origins.append(origins[local])
            new_positions.append(per_positions)
            new_origins.append(per_origins)
        self._step["groups"] = TokenGroups(new_positions, new_origins, groups.grids)
        return hidden.gather(1, local_index[..., None].expand(-1, -1, hidden.shape[-1]))

    def _stage_kwargs(self, stage: Stage, hidden: torch.Tensor, kwargs: dict, mode: str) -> dict:
        cached = self._step["cache"].get(stage.layer)
        if cached is None:
            cached = (
                self._prefill_kwargs(stage, hidden, kwargs)
                if mode == "prefill"
                else self._decode_kwargs(stage, hidden, kwargs)
            )
            self._step["cache"][stage.layer] = cached
        return {**kwargs, **cached}

    def _prefill_kwargs(self, stage: Stage, hidden: torch.Tensor, kwargs: dict) -> dict:
        batch = stage.index.shape[0]
        full = self.prefill.position_ids
        if self.reindex:
            position_ids = (stage.valid.long().cumsum(1) - 1).clamp(min=0)
            position_ids = position_ids.expand(*full.shape[:-2], -1, -1)  # M-RoPE: one row per axis
            position_embeddings = self.stack.rope(hidden, position_ids)
        else:
            position_ids = full.gather(-1, stage.index.expand(*full.shape[:-2], -1, -1))
            cos, sin = kwargs["position_embeddings"]
            pick = stage.index[..., None].expand(-1, -1, cos.shape[-1])
            position_embeddings = tuple(t.expand(batch, *t.shape[1:]).gather(1, pick) for t in (cos, sin))
        update = {"position_embeddings": position_embeddings}
        if kwargs.get("position_ids") is not None:  # M-RoPE text models pass None to their layers
            update["position_ids"] = position_ids
        update["attention_mask"] = self._mask(stage.valid, stage.valid.shape[1], stage.needs_mask, hidden)
        if "cache_position" in kwargs:  # transformers versions that still pass it to layers
            update["cache_position"] = torch.arange(stage.valid.shape[1], device=hidden.device)
        return update

    def _decode_kwargs(self, stage: Stage, hidden: torch.Tensor, kwargs: dict) -> dict:
        query_count = self._step["query_count"]
        kv_valid = torch.cat([stage.valid, self._step["new_valid"]], dim=1)
        # the model's own mask spans the unpruned cache, so it is replaced even when nothing is hidden
        needed = stage.needs_mask or query_count > 1 or not bool(kv_valid.all())
        update: dict = {"attention_mask": self._mask(kv_valid, query_count, needed, hidden)}
        if self.reindex:
            position_ids = self._step["position_ids"] - stage.dropped[:, None]
            if kwargs.get("position_ids") is not None:
                update["position_ids"] = position_ids
            update["position_embeddings"] = self.stack.rope(hidden, position_ids)
        if "cache_position" in kwargs:
            update["cache_position"] = torch.arange(
                kv_valid.shape[1] - query_count, kv_valid.shape[1], device=hidden.device
            )
        return update

    def _mask(
        self, kv_valid: torch.Tensor, query_count: int, needed: bool, hidden: torch.Tensor
    ) -> torch.Tensor | None:
        """The layer mask for `query_count` queries over `kv_valid` keys. `needed` is False when plain
        causal attention over every key is all there is to it: SDPA then runs unmasked, and eager
        still needs the causal part unless a single query sees every key."""
        if not needed and (self.implementation == "sdpa" or query_count == 1):
            return None
        return compat.layer_mask(_causal_mask(kv_valid, query_count), self.implementation, hidden.dtype)

    def _check_cached_length(self, layer: int, stage: Stage) -> None:
        """Raise before a decoding step attends over a cache that does not hold what this layer kept."""
        expected = stage.valid.shape[1] + self._step["new_valid"].shape[1] - self._step["query_count"]
        actual = self.prefill_tracker.cache.get_seq_length(layer)
        if actual != expected:
            raise compat.bookkeeping_error(
                f"decoder layer {layer} caches {actual} tokens where {self.pruner.name} kept {expected}"
            )
