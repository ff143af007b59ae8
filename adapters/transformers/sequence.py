"""Shortening a batch of input sequences before the language model, keeping masks and positions
consistent for prefill and for the decoding steps after it."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Packed:
    """A batch after dropping tokens. `index` (B, L') maps each slot to its original position
    (padding slots repeat 0); `valid` marks real slots; `mask` is None when the original batch had no
    attention mask and every row kept the same length (the model then runs its unmasked path)."""

    embeds: torch.Tensor
    index: torch.Tensor
    valid: torch.Tensor
    mask: torch.Tensor | None
    position_ids: torch.Tensor
    dropped: torch.Tensor  # (B,) real tokens removed per sample

    def prefill_state(self, length: int, reindex: bool) -> PackedPrefill:
        """What decoding after this packed prefill of a `length`-token prompt needs."""
        return PackedPrefill(length, self.index.shape[1], self.mask, self.dropped, reindex)

    def slots(self, length: int) -> torch.Tensor:
        """(B, length): the packed slot of each original real position, -1 where it was dropped."""
        slot_of = torch.full((self.index.shape[0], length), -1, dtype=torch.long, device=self.index.device)
        for b in range(self.index.shape[0]):
            real = self.valid[b].nonzero().squeeze(1)
            slot_of[b, self.index[b, real]] = real
        return slot_of


def pack(
    embeds: torch.Tensor,
    keep: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    reindex: bool,
) -> Packed:
    """Keep the positions where `keep` (B, L) is True, re-padding on the side the batch was padded.

    position_ids may carry leading dims (M-RoPE: (3, B, L)); None means the model's default
    0..L-1. With `reindex`, kept tokens are renumbered 0.. per sample.
    """
    batch, length = keep.shape
    device = embeds.device
    valid_in = attention_mask.bool() if attention_mask is not None else torch.ones_like(keep)
    pad_right = attention_mask is not None and not bool(attention_mask[:, -1].all())
    rows = [keep[b].nonzero().squeeze(1) for b in range(batch)]
    width = max(len(r) for r in rows)
    index = torch.zeros(batch, width, dtype=torch.long, device=device)
    slot = torch.zeros(batch, width, dtype=torch.bool, device=device)
    for b, r in enumerate(rows):
        span = slice(0, len(r)) if pad_right else slice(width - len(r), width)
        index[b, span] = r
        slot[b, span] = True
    valid = slot & valid_in.gather(1, index)
    new_embeds = embeds.gather(1, index[..., None].expand(-1, -1, embeds.shape[-1])) * slot[..., None]
    if attention_mask is None and bool(slot.all()):
        mask = None
    else:
        mask = valid.to(attention_mask.dtype if attention_mask is not None else torch.long)
    if reindex:
        base = (
            (valid.long().cumsum(1) - 1).clamp(min=0)
            if position_ids is not None
            else torch.arange(width, device=device).expand(batch, -1)
        )
        lead = position_ids.shape[:-2] if position_ids is not None else ()
        new_positions = base.expand(*lead, batch, width).clone()
    else:
        if position_ids is None:
            position_ids = torch.arange(length, device=device).expand(batch, -1)
        full = position_ids.expand(*position_ids.shape[:-2], batch, length)
        new_positions = full.gather(-1, index.expand(*full.shape[:-2], batch, width)) * valid
    dropped = valid_in.sum(1) - valid.sum(1)
    return Packed(new_embeds, index, valid, mask, new_positions, dropped)


@dataclass
class PackedPrefill:
    """What the decoding steps after a packed prefill need."""

    length: int
    packed_length: int
    mask: torch.Tensor | None
    dropped: torch.Tensor
    reindex: bool

    def decode_kwargs(self, kwargs: dict, past: int) -> dict:
        """Mask and position ids for a decoding step whose model inputs were built for the full prompt."""
        update = {}
        mask = kwargs.get("attention_mask")
        if mask is not None:
            prefix = self.mask if self.mask is not None else mask.new_ones(mask.shape[0], self.packed_length)
            update["attention_mask"] = torch.cat([prefix, mask[:, self.length :]], dim=1)
        position_ids = kwargs.get("position_ids")
        if position_ids is None:
            if not self.reindex:  # the model's default counts cached slots; originals continue after `length`
                queries = next(
                    kwargs[k] for k in ("input_ids", "inputs_embeds") if kwargs.get(k) is not None
                ).shape[1]
                start = past + self.length - self.packed_length
                update["position_ids"] = torch.arange(start, start + queries, device=self.dropped.device)[
                    None
                ]
        elif self.reindex:
            update["position_ids"] = position_ids - self.dropped.view(
                *([1] * (position_ids.dim() - 2)), -1, 1
            )
        return update
