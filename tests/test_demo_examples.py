"""The runnable examples in demos/ (other than the app) run offline and do what they say."""

from __future__ import annotations

import torch

from tokenprune.demos import custom_pruner
from tokenprune.pruners import VisualTokens


def test_largest_norm_keeps_the_tokens_with_the_largest_features_in_grid_order():
    features = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 5.0], [2.0, 0.0]])
    selection = custom_pruner.LargestNorm(budget=2).select(VisualTokens(features, (2, 2)))
    assert selection.indices.tolist() == [0, 2]


def test_custom_pruner_example_prunes_the_image_and_prints_the_stats(capsys):
    (record,) = custom_pruner.main()
    assert (record.method, record.stage, record.grid) == ("LargestNorm", "pre_llm", (6, 6))
    assert (record.tokens_before, record.tokens_after) == (36, 9)
    assert "LargestNorm (pre_llm): 36 -> 9 image tokens" in capsys.readouterr().out
