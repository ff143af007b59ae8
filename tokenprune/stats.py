"""Per-image, per-stage records of what a pruner kept."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PruneRecord:
    """One pruned group of tokens (an image, a video, or a prompt) in one forward pass.

    stage: "in_tower" (then `layer` is the vision-tower block it ran before), "pre_llm", "prefill"
    or "llm" (then `layer` is the decoder layer it ran before);
    method: the pruner's class name; seconds: time spent selecting (a step that selects several
    groups at once splits its time evenly between their records).

    `kept_indices` index the group's original token order: the patch grid in row-major order for
    images ((t, h, w) flattened for video), prompt positions for text.
    """

    stage: str
    method: str
    sample: int
    group: int
    tokens_before: int
    tokens_after: int
    kept_indices: tuple[int, ...]
    grid: tuple[int, ...] | None
    seconds: float
    layer: int | None = None


@dataclass
class RunStats:
    """Records collected while a pruner is applied; `records` grows with every pruned forward."""

    records: list[PruneRecord] = field(default_factory=list)

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]

    def clear(self) -> None:
        self.records.clear()

    def for_stage(self, stage: str) -> list[PruneRecord]:
        return [r for r in self.records if r.stage == stage]
