"""In-tower pruning for the Qwen2-VL and Qwen2.5-VL vision transformers.

The tower packs all images into one sequence of patches, 2x2 merge groups contiguous, in Qwen2.5-VL
permuted window by window (`window_index`). Pruning keeps or drops whole merge groups, so the merger
still sees complete groups. Forward pre-hooks on the blocks shorten the hidden states and hand later
blocks the kept patches' rotary embeddings and attention bounds rebuilt from the kept groups
(`cu_seqlens` per image; in Qwen2.5-VL's windowed blocks the window bounds, empty windows left out).
A hook on the merger scatters its output back to the unpruned group count, so the tower's own
reordering runs unchanged; the adapter then reads the kept groups of each image.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch

from tokenprune.adapters.transformers.base import SelectionLog
from tokenprune.adapters.transformers.tower import block_attention
from tokenprune.pruners.base import TowerPruner, TowerTokens
from tokenprune.stats import RunStats


@dataclass
class QwenTowerRun:
    """One pass of the tower: per step (block, per image the groups before, the kept group indices in
    the image's row-major order, seconds) and per image the kept groups after the last step."""

    steps: list[tuple[int, list[int], list[torch.Tensor], float]]
    kept: list[torch.Tensor]
    groups: list[int]


def group_attention(block, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unit: int):
    """Head-averaged keys (n, d) and attention probabilities (H, n, n) between the merge groups of one
    image: the block's q/k (rotated) over all of its patches, the probability a group's patches give
    to another's summed over its patches and averaged over the querying group's."""
    attention = block.attn
    x = block.norm1(hidden)
    length = x.shape[0]
    q, k, _ = attention.qkv(x).reshape(length, 3, attention.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    rotary = sys.modules[type(attention).__module__].apply_rotary_pos_emb_vision
    q, k = rotary(q, k, cos, sin)
    q, k = q.transpose(0, 1).float(), k.transpose(0, 1).float()  # (H, L, d)
    probabilities = block_attention(q, k, attention.scaling, None)
    heads, groups = probabilities.shape[0], length // unit
    probabilities = probabilities.view(heads, groups, unit, groups, unit).sum(-1).mean(2)
    keys = k.mean(0).view(groups, unit, -1).mean(1)
    return keys, probabilities


class QwenTowerEngine:
    """Runs `pruner` inside a Qwen2-VL / Qwen2.5-VL vision tower (`tower`: `model.model.visual`)."""

    def __init__(self, pruner: TowerPruner, tower, windowed: bool) -> None:
        if "attention" not in pruner.needs:
            raise ValueError(
                f"{pruner.name} cannot run inside the Qwen-VL vision tower: merging needs proportional "
                "attention (an additive bias per key), which its packed cu_seqlens attention does not take; "
                "use ZeroTPrune there"
            )
        self.pruner = pruner
        self.tower = tower
        self.windowed = windowed
        self.unit = tower.spatial_merge_size**2
        self.depth = len(tower.blocks)
        self.layers = pruner.tower_layers(self.depth)
        self.full_blocks = set(tower.fullatt_block_indexes) if windowed else set(range(self.depth))
        self.run: QwenTowerRun | None = None
        self._state = None

    def install(self, adapter) -> None:
        adapter.hook_before(self.tower, self._before_tower)
        for index in range(self.layers[0], self.depth):
            adapter.hook_before(self.tower.blocks[index], self._hook(index))
        adapter.hook_after(self.tower.merger, self._after_merger)

    def _hook(self, index: int):
        def hook(module, args, kwargs):
            return self._before_block(index, module, args, kwargs)

        return hook

    def _before_tower(self, module, args, kwargs):
        grid_thw = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
        if bool((grid_thw[:, 0] > 1).any()):
            raise ValueError("in-tower pruning on Qwen-VL supports images; this input holds a video")
        merge = self.tower.spatial_merge_size
        groups = [int(h * w) // self.unit for _, h, w in grid_thw.tolist()]
        total = sum(groups)
        device = grid_thw.device
        if self.windowed:
            from transformers.vision_utils import get_vision_window_index

            order, cu_windows = get_vision_window_index(
                grid_thw, merge, self.tower.window_size, self.tower.patch_size
            )
            order = order.to(device)
            bounds = cu_windows.to(device)[1:] // self.unit
            window = torch.searchsorted(bounds, torch.arange(total, device=device), right=True)
        else:
            order = torch.arange(total, device=device)
            window = None
        starts = torch.tensor([0, *groups], device=device).cumsum(0)
        image = torch.searchsorted(starts[1:], order, right=True)
        self._state = dict(
            alive=torch.arange(total, device=device),  # tower-order slots of the kept groups
            local=order - starts[image],  # each slot's group index within its image (row-major)
            image=image,
            window=window,
            groups=groups,
            schedules=[dict(self.pruner.schedule(n, self.depth)) for n in groups],
            steps=[],
            bounds=None,  # (cu_seqlens, cu_window_seqlens) of the kept groups, once pruned
        )
        self.run = None

    def _before_block(self, index, block, args, kwargs):
        state = self._state
        if state is None:
            raise RuntimeError("a Qwen-VL vision block ran outside its tower; in-tower pruning cannot follow")
        hidden = args[0] if args else kwargs["hidden_states"]
        if index in self.layers:
            hidden = self._step(index, block, hidden, *self._rotary(kwargs))
        if state["bounds"] is None:
            return None
        full, windows = state["bounds"]
        bounds = full if index in self.full_blocks else windows
        kwargs = {**kwargs, "cu_seqlens": bounds, "position_embeddings": self._rotary(kwargs)}
        if "max_seqlen" in kwargs:
            kwargs["max_seqlen"] = int(bounds.diff().max())
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def _rotary(self, kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept patches' rows of the tower's (unpruned) rotary embeddings."""
        alive = self._state["alive"]
        patches = (alive[:, None] * self.unit + torch.arange(self.unit, device=alive.device)).flatten()
        cos, sin = kwargs["position_embeddings"]
        return cos[patches.to(cos.device)], sin[patches.to(sin.device)]

    def _step(self, index: int, block, hidden: torch.Tensor, cos, sin) -> torch.Tensor:
        state = self._state
        started = time.perf_counter()
        image_of = state["image"][state["alive"]]
        keep_slots, before, kept_local = [], [], []
        with torch.no_grad():
            for image in range(len(state["groups"])):
                slots = (image_of == image).nonzero().squeeze(1)  # contiguous: images follow each other
                span = slice(int(slots[0]) * self.unit, (int(slots[-1]) + 1) * self.unit)
                keys, probabilities = group_attention(block, hidden[span], cos[span], sin[span], self.unit)
                tokens = TowerTokens(
                    index, self.depth, keys[None], torch.ones(1, len(slots), device=hidden.device), 0,
                    probabilities[None],
                )  # fmt: skip
                keep = state["schedules"][image][index]
                step = self.pruner.step(tokens, keep)
                kept = slots[step.kept[0]]
                keep_slots.append(kept)
                before.append(len(slots))
                kept_local.append(state["local"][state["alive"][kept]].sort().values)
        keep_slots = torch.cat(keep_slots)
        hidden = hidden.view(-1, self.unit, hidden.shape[-1])[keep_slots].flatten(0, 1)
        state["alive"] = state["alive"][keep_slots]
        state["bounds"] = self._bounds()
        state["steps"].append((index, before, kept_local, time.perf_counter() - started))
        return hidden

    def _bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """cu_seqlens of the kept patches per image and per window (empty windows left out)."""
        state = self._state
        alive = state["alive"]

        def cumulative(ids: torch.Tensor) -> torch.Tensor:
            counts = torch.unique_consecutive(ids, return_counts=True)[1] * self.unit
            return torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)

        full = cumulative(state["image"][alive])
        windows = cumulative(state["window"][alive]) if self.windowed else full
        return full, windows

    def _after_merger(self, module, args, kwargs, output):
        state = self._state
        if state is None:
            return None
        self._state = None
        image_of = state["image"][state["alive"]]
        kept = [
            state["local"][state["alive"][image_of == i]].sort().values for i in range(len(state["groups"]))
        ]
        self.run = QwenTowerRun(state["steps"], kept, state["groups"])
        if not state["steps"]:
            return None
        # back to the unpruned group count in tower order, so the tower's reordering applies unchanged
        full = output.new_zeros(len(state["local"]), output.shape[-1])
        full[state["alive"]] = output
        return full

    def take_run(self, groups: list[int]) -> QwenTowerRun:
        """The last pass of the tower, over images of `groups` merge groups each, once."""
        run, self.run = self.run, None
        if run is None or run.groups != groups:
            raise ValueError(
                "in-tower pruning needs the images encoded while the pruner is applied (pass pixel_values)"
            )
        return run

    def record(self, run: QwenTowerRun, stats: RunStats, image: int, sample: int, group: int, grid) -> None:
        images = len(run.groups)
        for layer, before, kept, seconds in run.steps:
            log = SelectionLog(stats, "in_tower", self.pruner.name, layer)
            log.add(sample, group, before[image], kept[image], grid, seconds / images)
