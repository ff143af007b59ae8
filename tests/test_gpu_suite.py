"""The GPU benchmark suite (benchmarks/gpu_suite.py): its smoke mode runs every step at tiny sizes on the
CPU the way the GPU machine runs it, from the working tree without installing tokenprune; its default
configuration is planned to fit the time a GPU is lent for; failures and the time limit are recorded,
not raised."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import tokenprune as tp
from tiny_models import llava_inputs, tiny_llava
from tokenprune import registry
from tokenprune.budget import resolve_budget
from tokenprune.pruners.base import PreLLMPruner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402
import gpu_suite  # noqa: E402

# No site-packages processing (-S): the editable install's import hook stays out, so tokenprune comes
# from the working tree through PYTHONPATH, as on the GPU machine. The suite must not import the
# context-pruning dependencies either.
RUN_FROM_SOURCE = """
import runpy, sys
sys.path += {site}
sys.path.insert(0, {benchmarks!r})
sys.argv = ["gpu_suite.py", *sys.argv[1:]]
try:
    runpy.run_path({script!r}, run_name="__main__")
finally:
    print("tokenprune.adapters from", sys.modules["tokenprune.adapters"].__file__)
    print("context dependencies imported:", sorted({{"lxml", "bm25s"}} & set(sys.modules)))
"""


def test_smoke_runs_every_step_and_every_registered_visual_pruner_from_the_source_tree(tmp_path):
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    code = RUN_FROM_SOURCE.format(
        site=site, benchmarks=str(ROOT / "benchmarks"), script=str(ROOT / "benchmarks" / "gpu_suite.py")
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-S", "-c", code, "--smoke", "--out", str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "estimated GPU duration" in done.stdout
    assert f"tokenprune.adapters from {ROOT / 'adapters' / '__init__.py'}" in done.stdout
    assert "context dependencies imported: []" in done.stdout

    result = json.loads((tmp_path / "gpu_suite_smoke.json").read_text())
    steps = {step["name"]: step for step in result["steps"]}
    assert [step["status"] for step in result["steps"]] == ["done"] * 6, result["steps"]
    sizes = gpu_suite.SMOKE
    visual = registry.pruner_names(drops="visual")
    for name, budgets, candidates in [
        ("llava", sizes.llava_budgets, sizes.llava.patches),
        ("qwen-image", sizes.qwen_budgets, sizes.qwen[0].merged),
        ("qwen-video", sizes.qwen_budgets, sizes.qwen[1].merged),
    ]:
        rows = steps[name]["rows"]
        assert all(row["status"] in ("ok", "skipped") for row in rows), rows
        assert all(row["reason"] for row in rows if row["status"] == "skipped")
        measured = {(row["pruner"], row["budget"]) for row in rows if row["status"] == "ok"}
        skipped = {row["pruner"] for row in rows if row["status"] == "skipped"}
        assert measured | {(p, b) for p in skipped for b in budgets} == {
            (p, b) for p in visual for b in budgets
        }
        for row in rows:
            if row["status"] == "ok" and registry.pruner_entry(row["pruner"]).exact:  # through the real model
                assert row["tokens"] == resolve_budget(row["budget"], candidates), row
                assert row["prefill_s"] > 0 and row["ideal"] > 1
        assert steps[name]["unpruned"]["tokens"] == candidates
    for length in sizes.lengths:
        rows = steps[f"prefill-skip-{length}"]["rows"]
        assert [row["method"] for row in rows] == ["unpruned", "LazySkip (default)", "GemFilter (1024)"]
        assert all(row["status"] == "ok" for row in rows)
        assert (
            rows[1]["ideal"] > 1 and rows[1]["selection_pct"] > 0
        )  # LazySkip's depth-resolved copy is timed
    assert [(row["tokens"], row["kept"]) for row in steps["divprune-selection"]["rows"]] == list(
        sizes.selection
    )
    table = (tmp_path / "gpu_suite_smoke.md").read_text()
    assert all(f"## {step['title']}" in table for step in result["steps"])


def test_the_default_configuration_runs_the_real_sizes_within_eight_minutes():
    sizes = gpu_suite.FULL
    assert sizes.llava.patches == 576 and sizes.llava_budgets == (64, 128, 192)
    assert [g.merged for g in sizes.qwen] == [1024, 2016] and sizes.qwen[1].grid_thw[0] * 2 == 16  # frames
    assert sizes.lengths == (8192, 32768)
    assert [n for n, _ in sizes.selection] == [576, 2880, 16384]
    steps = gpu_suite.plan(sizes, gpu_suite.cpu_device(torch.float32))
    assert [step.name for step in steps] == [
        "llava", "qwen-image", "qwen-video", "divprune-selection", "prefill-skip-8192", "prefill-skip-32768"
    ]  # fmt: skip
    assert gpu_suite.estimated_seconds(steps) < 8 * 60


def test_a_failing_step_is_recorded_and_steps_past_the_limit_are_skipped(tmp_path):
    def broken():
        raise RuntimeError("out of memory")

    def fine():
        return {"rows": [{"tokens": 4, "kept": 2, "seconds": 0.001, "peak_mb": 0.0, "status": "ok"}]}

    steps = [
        gpu_suite.Step("divprune-a", "A", 0.0, broken),
        gpu_suite.Step("divprune-b", "B", 0.0, fine),
        gpu_suite.Step("divprune-c", "C", 3600.0, fine),
    ]
    suite = {
        "device": "cpu", "torch": "x", "transformers": "y", "dtype": "float32", "rounds": 1, "clock": "c",
        "started": "now", "estimate_s": 0.0, "max_minutes": 1.0,
    }  # fmt: skip
    limit = time.monotonic() - gpu_suite.STARTED + 60
    results = gpu_suite.run_steps(steps, suite, tmp_path, "suite", limit)
    assert [r["status"] for r in results] == ["error", "done", "skipped"]
    assert "RuntimeError: out of memory" in results[0]["reason"]
    assert "would end past the limit" in results[2]["reason"]
    written = json.loads((tmp_path / "suite.json").read_text())
    assert [s["status"] for s in written["steps"]] == ["error", "done", "skipped"]
    assert "| 4 | 2 | 1.00 | 0 |" in (tmp_path / "suite.md").read_text()


@dataclass
class Broken(PreLLMPruner):
    def select(self, tokens):
        raise RuntimeError("no selection")


def test_a_config_whose_warmup_fails_is_reported_and_the_others_are_timed():
    model = tiny_llava()
    inputs = llava_inputs(model, [(3, 4)])
    failures: dict[str, str] = {}
    configs = {"unpruned": None, "broken": Broken(4), "divprune": tp.DivPrune(4)}
    seconds, recorded = common.prefill_timings(
        model, lambda: model(**inputs), configs, 2, time.perf_counter, tower=model.model.vision_tower,
        failures=failures,
    )  # fmt: skip
    assert failures == {"broken": "RuntimeError: no selection"}
    assert set(seconds) == set(recorded) == {"unpruned", "divprune"}
    assert all(len(runs) == 2 for runs in seconds.values())
    assert [r.tokens_after for r in recorded["divprune"].records] == [4]
    # the failed run's hooks came off with it: the tower carries none, and the model takes a pruner again
    assert not model.model.vision_tower._forward_hooks and not model.model.vision_tower._forward_pre_hooks
    with tp.apply(model, tp.DivPrune(4)):
        model(**inputs)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_results_hold_no_non_finite_numbers(value):
    assert gpu_suite.finite({"a": [1.0, value], "b": value}) == {"a": [1.0, None], "b": None}
