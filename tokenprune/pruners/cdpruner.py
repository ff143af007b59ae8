"""CDPruner: the visual tokens a conditional determinantal point process (DPP) finds most diverse,
diversity weighted by relevance to the instruction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from tokenprune.pruners.adaptive import Ranking
from tokenprune.pruners.base import PreLLMPruner, Selection, VisualTokens

# below this share of the largest kernel diagonal a token adds nothing the picks do not span: its
# residual is rounding noise, and dividing by its square root would blow the update up
EXHAUSTED = 1e-6


def instruction_relevance(
    features: torch.Tensor, text: torch.Tensor, negate: bool = False, two_sided: bool = False
) -> torch.Tensor:
    """Relevance of each visual token to the instruction, min-max scaled to [0, 1) per image:
    the mean cosine similarity to the instruction's tokens (negated as CDPruner's CLIP code does when
    `negate`); with `two_sided`, how far that similarity lies from the image's median (torch's lower
    median), on either side."""
    unit = torch.nn.functional.normalize(features.float(), dim=-1)
    words = torch.nn.functional.normalize(text.float(), dim=-1)
    relevance = (unit @ words.T).mean(dim=1)
    if negate:
        relevance = -relevance
    if two_sided:
        relevance = (relevance - relevance.median()).abs()
    low = relevance.min()
    return (relevance - low) / (relevance.max() - low + 1e-6)


@torch.no_grad()
def conditional_dpp_greedy(
    unit: torch.Tensor,
    quality: torch.Tensor,
    k: int,
    track: bool = True,
    until: tuple[str, float] | None = None,
) -> Ranking:
    """Greedy MAP inference of the DPP with kernel L_ij = q_i <u_i, u_j> q_j (Chen et al., NeurIPS
    2018): each step picks the token with the largest conditional variance d_j^2 =
    det(L_{S+j}) / det(L_S) and updates every d^2 through one incremental Cholesky row.

    unit: (N, D) rows (unit norm for cosine similarity); quality: (N,) > 0. Kernel rows are computed
    when a token is picked, so no N x N matrix is ever held: O(k N D + k^2 N) time, O(k N) memory.
    With `track` (else they are None): gains[t] is how much pick t lowers the trace of the residual
    kernel L - L_{:,S} L_S^-1 L_{S,:} (the kernel's part the picks do not explain), total is trace(L),
    and uncovered[t] is the largest share of its own diagonal any token not yet picked keeps
    unexplained after pick t. Once the picks span every token (rank exhausted), the remaining picks
    follow the residual order without updates. `until` = (rule, target) of `Adaptive` ("cover" or
    "mass", with `track`) stops after the first pick at which the rule is met, as the rule counts.
    """
    n = unit.shape[0]
    unit, quality = unit.float(), quality.float()
    diagonal = quality.square() * unit.square().sum(dim=-1)
    residual = diagonal.clone()  # d^2; -inf once picked
    total = float(residual.sum())
    floor = EXHAUSTED * float(residual.max()) if n else 0.0
    rows = unit.new_zeros(k, n)  # incremental Cholesky rows c_t
    order = torch.empty(k, dtype=torch.long, device=unit.device)
    gains = unit.new_zeros(k) if track else None
    uncovered = unit.new_zeros(k) if track else None
    alive = torch.ones(n, dtype=torch.bool, device=unit.device)
    inverse_diagonal = 1.0 / diagonal.clamp(min=1e-30)
    for t in range(k):
        j = int(residual.argmax())
        order[t] = j
        d2 = float(residual[j])
        if d2 > floor:
            kernel_row = quality[j] * torch.mv(unit, unit[j]) * quality
            e = (kernel_row - rows[:t, j] @ rows[:t]) / math.sqrt(d2)
            if track:  # picked tokens have no residual left to lower; their columns are never read
                e.mul_(alive)
            rows[t] = e
            e.square_()
            if track:
                gains[t] = e.sum()
            residual -= e
        residual[j] = float("-inf")
        if track:
            alive[j] = False
            uncovered[t] = (residual * inverse_diagonal).max().clamp(min=0) if t + 1 < n else 0.0
            if until is not None and _met(until, gains[: t + 1], uncovered[t], total):
                return Ranking(order[: t + 1], gains[: t + 1], total, uncovered[: t + 1])
    return Ranking(order, gains, total, uncovered)


def _met(until: tuple[str, float], gains: torch.Tensor, uncovered: torch.Tensor, total: float) -> bool:
    """Whether Adaptive's rule is met after these picks (the comparisons of `mass_count` and
    `cover_count`)."""
    rule, target = until
    if rule == "mass":
        return bool(gains.double().cumsum(0)[-1] / max(total, 1e-30) >= target)
    return bool(uncovered <= 1.0 - target)


@dataclass
class CDPruner(PreLLMPruner):
    """Keep the `budget` visual tokens that a DPP conditioned on the instruction selects (CDPruner,
    NeurIPS 2025): kernel = cosine similarity of the projected tokens, weighted by each token's
    relevance r to the instruction's text embedding as exp(theta / (2 (1 - theta)) r) (theta = 1:
    r itself), picked by greedy MAP inference.

    theta in (0, 1] trades relevance (larger) against diversity. negate_relevance: rank tokens
    least similar to the instruction as most relevant, as the reference code does with CLIP's text
    tower; here the instruction comes from the language model's own input embeddings, the space the
    projector maps into, where similar means relevant. two_sided: rank tokens by how far their
    similarity lies from the image's median, above or below, so that the sign a space gives to
    "relevant" need not be known (an instruction may single out its tokens by low similarity).
    """

    theta: float = 0.5
    negate_relevance: bool = False
    two_sided: bool = False

    needs: ClassVar[frozenset[str]] = frozenset({"text"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.theta, bool) or not 0.0 < self.theta <= 1.0:
            raise ValueError(f"theta must lie in (0, 1], got {self.theta}")
        if self.two_sided and self.negate_relevance:
            raise ValueError(
                "two_sided relevance has no sign to negate: set one of two_sided, negate_relevance"
            )

    def relevance(self, tokens: VisualTokens) -> torch.Tensor:
        """Each token's relevance to the instruction, in [0, 1) (`instruction_relevance`)."""
        if tokens.text is None or len(tokens.text) == 0:
            raise ValueError(
                "CDPruner needs the instruction's text embedding; this adapter did not provide it"
            )
        return instruction_relevance(tokens.features, tokens.text, self.negate_relevance, self.two_sided)

    def quality(self, tokens: VisualTokens) -> torch.Tensor:
        """Each token's weight in the conditional kernel."""
        relevance = self.relevance(tokens)
        if self.theta == 1.0:
            return relevance
        return torch.exp(self.theta / (2 * (1 - self.theta)) * relevance)

    def rank(self, tokens: VisualTokens, limit: int, until: tuple[str, float] | None = None) -> Ranking:
        """The first `limit` greedy picks and their gains; with `until` (Adaptive's rule and target),
        only as many as the rule keeps."""
        unit = torch.nn.functional.normalize(tokens.features.float(), dim=-1)
        return conditional_dpp_greedy(unit, self.quality(tokens), limit, until=until)

    def select(self, tokens: VisualTokens) -> Selection:
        n = len(tokens)
        k = self.keep_count(n)
        if k >= n:
            return Selection(torch.arange(n, device=tokens.features.device))
        unit = torch.nn.functional.normalize(tokens.features.float(), dim=-1)
        picks = conditional_dpp_greedy(unit, self.quality(tokens), k, track=False).order
        return Selection(picks.sort().values)
