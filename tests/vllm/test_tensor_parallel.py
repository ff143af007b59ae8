"""Tensor parallelism: LLaVA and Qwen2.5-VL with VisionZip at tensor_parallel_size=2 (two CPU ranks,
each holding half of every attention layer's heads) select the same tokens and generate the same
greedy outputs as at tensor_parallel_size=1. VisionZip's scores sum attention over all heads, so each
rank's partial sum must be all-reduced: without it the ranks would score from different halves and
disagree with each other and with one rank. Three images go through the tower as one batch, which
also catches an all-reduce of a strided view (LLaVA's [CLS] row), whose last elements the CPU
all-reduce left unreduced. The engines run in tensor_parallel.py (see there why)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("tensor_parallel.py")


@pytest.fixture(scope="module")
def results(llava_dir, qwen_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tp") / "results.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(llava_dir), str(qwen_dir), str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        env=os.environ.copy(),
    )
    if done.returncode:
        pytest.fail(
            f"tensor_parallel.py exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        )
    return json.loads(out.read_text())


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_two_ranks_select_and_generate_as_one(results, family):
    one, two = results[f"{family}/tp1"], results[f"{family}/tp2"]
    [single] = one["ranks"]
    assert len(two["ranks"]) == 2
    assert len(single) == 3 and all(len(call["kept"]) == 4 for call in single)
    for rank in two["ranks"]:
        assert [call["kept"] for call in rank] == [call["kept"] for call in single]
        for got, want in zip(rank, single):
            torch.testing.assert_close(torch.tensor(got["attention"]), torch.tensor(want["attention"]))
    for got, want in zip(two["outputs"], one["outputs"], strict=True):
        assert got["prompt_token_ids"] == want["prompt_token_ids"]
        assert got["token_ids"] == want["token_ids"]
        for got_step, want_step in zip(got["logprobs"], want["logprobs"]):
            assert got_step.keys() == want_step.keys()
            for token, logprob in want_step.items():
                assert got_step[token] == pytest.approx(logprob, abs=1e-3)
