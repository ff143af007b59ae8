"""The evaluation harness end to end on a few questions, with untrained toy-shaped models."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch

import tokenprune as tp
from tokenprune.eval import cli, data, harness
from tokenprune.zoo import models


@pytest.fixture(scope="module")
def vlm():
    torch.manual_seed(0)
    processor = models.vlm_processor()
    return models.build_vlm(processor.tokenizer).eval(), processor


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    tokenizer = models.lm_tokenizer()
    return models.build_lm(tokenizer).eval(), tokenizer


def test_answers_are_matched_by_leading_words():
    assert harness.is_correct("Red.", "red")
    assert harness.is_correct("k12 v3 ;", "k12 v3")
    assert not harness.is_correct("1", "10")
    assert not harness.is_correct("k12", "k12 v3")
    assert not harness.is_correct("", "")


def test_pruners_get_layers_relative_to_depth():
    assert harness.visual_pruner("fastv", 0.25, depth=4).layer == 2
    assert harness.visual_pruner("feather", 0.25, depth=4).layers_at == (1, 2)
    assert harness.visual_pruner("feather", 0.25, depth=32).layers_at == (8, 16)
    default = harness.prompt_pruner("lazyskip", 0.1, depth=4)  # budget = the default schedule's last keep
    assert (
        default.schedule == tp.LazySkip().for_depth(4).schedule or default.schedule == tp.LazySkip().schedule
    )
    assert harness.prompt_pruner("gemfilter", 0.1, depth=32).filter_layer == 13
    assert harness.prompt_pruner("gemfilter", 0.1, depth=6, filter_layer=1).filter_layer == 1
    with pytest.raises(ValueError, match=r"filter_layer must lie in \[0, 5\]"):
        harness.prompt_pruner("gemfilter", 0.1, depth=6, filter_layer=6)
    with pytest.raises(ValueError, match="supported"):
        harness.visual_pruner("fastvv", 0.25, depth=4)
    with pytest.raises(ValueError, match="supported"):
        harness.prompt_pruner("divprune", 0.25, depth=4)


def test_composed_names_put_an_in_tower_stage_before_the_final_budget():
    composed = harness.visual_pruner("tome+divprune", 0.1, depth=4)
    assert [(type(s).__name__, s.budget) for s in composed.stages] == [("ToMe", 0.5), ("DivPrune", 0.2)]
    late = harness.visual_pruner("zerotprune+fastv", 0.75, depth=4)
    assert [(type(s).__name__, s.budget) for s in late.stages] == [("ZeroTPrune", 0.75), ("FastV", 0.75)]
    assert harness.describe(late) == "layer=2"
    with pytest.raises(ValueError, match="in-tower pruner"):
        harness.visual_pruner("divprune+tome", 0.1, depth=4)


def test_unpruned_and_full_budget_agree_and_results_are_relative(vlm):
    model, processor = vlm
    examples = data.vlm_examples(processor, "toy", limit=5)
    assert [e.kind for e in examples] == ["color_at", "shape_at", "where", "count", "top_row"]
    decode = lambda ids: processor.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    configs = [
        ("unpruned", None, None),
        ("divprune", 1.0, tp.DivPrune(1.0)),
        ("uniform", 0.25, tp.UniformPrune(0.25)),
    ]
    results = harness.evaluate(model, decode, examples, configs, progress=False)
    assert [r.pruner for r in results] == ["unpruned", "divprune", "uniform"]
    # keeping every token must not change any answer
    unpruned = [harness.is_answered(model, decode, e) for e in examples]
    assert results[1].accuracy == results[0].accuracy == sum(unpruned) / 5
    assert set(results[0].per_type) == {"color_at", "shape_at", "where", "count", "top_row"}
    # counts have no region; the others are grouped by the grid row of the asked object
    assert [e.region for e in examples] == ["row c", "row d", "row a", None, "row a"]
    assert results[0].per_region == {
        "row a": (unpruned[2] + unpruned[4]) / 2,
        "row c": float(unpruned[0]),
        "row d": float(unpruned[1]),
    }
    assert results[0].breakdown("region") is results[0].per_region
    with pytest.raises(ValueError, match="supported"):
        results[0].breakdown("colour")
    assert all(r.speedup > 0 for r in results)


def test_jsonl_rows_are_read_and_checked(tmp_path, vlm):
    _, processor = vlm
    from tokenprune.zoo import scenes

    s = scenes.sample(0, 0)
    scenes.to_pil(scenes.render([s.scene])[0]).save(tmp_path / "a.png")
    row = {"image": "a.png", "question": s.question, "answer": s.answer}
    (tmp_path / "q.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "region": "top"}) + "\n")
    plain, placed = data.vlm_examples(processor, str(tmp_path / "q.jsonl"), limit=10)
    assert plain.answer == s.answer and plain.kind == "all" and plain.region is None
    assert placed.region == "top"
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "a.png", "answer": "red"}) + "\n")
    with pytest.raises(ValueError, match="question"):
        data.vlm_examples(processor, str(tmp_path / "bad.jsonl"), limit=10)


def test_lm_examples_cover_both_hops_and_lengths(lm):
    _, tokenizer = lm
    examples = data.lm_examples(tokenizer, "toy", limit=4, lengths=(128, 256))
    assert [e.kind for e in examples] == ["hop1", "hop2", "hop1", "hop2"]
    assert [e.max_new_tokens for e in examples] == [1, 2, 1, 2]
    assert [e.inputs["input_ids"].shape[1] <= n for e, n in zip(examples, (128, 128, 256, 256))] == [True] * 4


def _cli_args(task: str, out, **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([task, "--out", str(out), "--no-progress"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_cli_writes_table_json_and_plot(tmp_path, vlm, lm, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_load_vlm", lambda model, device: vlm)
    monkeypatch.setattr(cli, "_load_lm", lambda model, device: lm)
    args = _cli_args("vlm", tmp_path, pruners=("divprune", "fastv", "feather"), budgets=(0.25,), limit=5)
    assert cli.run(args) == 0
    report = json.loads((tmp_path / "accuracy_vs_budget_vlm.json").read_text())
    assert [r["pruner"] for r in report["results"]] == ["unpruned", "divprune", "fastv", "feather"]
    assert (tmp_path / "accuracy_vs_budget_vlm.png").stat().st_size > 0
    assert set(report["results"][0]["per_region"]) == {"row a", "row c", "row d"}
    printed = capsys.readouterr().out
    assert "By image region of the answer" in printed and "| row a | row c | row d |" in printed
    args = _cli_args("lm", tmp_path, budgets=(0.3,), limit=2, lengths=(128,), filter_layer=1)
    assert cli.run(args) == 0
    report = json.loads((tmp_path / "accuracy_vs_budget_lm.json").read_text())
    assert [r["pruner"] for r in report["results"]] == ["unpruned", "lazyskip", "gemfilter"]
    assert report["results"][2]["setting"] == "filter_layer=1"
    assert "| lazyskip | 0.3 |" in capsys.readouterr().out


def test_bad_budgets_are_rejected():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["vlm", "--budgets", "0,1.5"])


@pytest.fixture(scope="module")
def vlm2():
    torch.manual_seed(0)
    processor = models.vlm2_processor()
    return models.build_vlm2(processor.tokenizer).eval(), processor


def _record(stage: str, after: int, layer: int | None = None, before: int = 256):
    from tokenprune.stats import PruneRecord

    return PruneRecord(stage, "X", 0, 0, before, after, tuple(range(after)), None, 0.0, layer)


def test_tokens_seen_averages_over_decoder_layers():
    assert harness.tokens_seen([], 256, depth=4) == (256.0, 256)
    assert harness.tokens_seen([_record("pre_llm", 26)], 256, depth=4) == (26.0, 26)
    # in-LLM pruning at layer 2 of 4: two layers see 256, two see 64; a decode step's record repeats
    fastv = [_record("llm", 64, layer=2), _record("llm", 64, layer=2, before=1)]
    assert harness.tokens_seen(fastv, 256, depth=4) == ((256 * 2 + 64 * 2) / 4, 64)
    staged = [_record("pre_llm", 128), _record("llm", 64, layer=1, before=128), _record("llm", 32, layer=3)]
    assert harness.tokens_seen(staged, 256, depth=4) == ((128 + 64 + 64 + 32) / 4, 32)
    # in-tower steps before blocks 0 and 1 on two groups (crops), then pre-LLM: the LLM sees the last
    # step's count of each group
    tower = [_record("in_tower", 128, layer=0), _record("in_tower", 64, layer=1)]
    tower.insert(1, dataclasses.replace(_record("in_tower", 100, layer=0), group=1))
    assert harness.tokens_seen(tower, 256, depth=4) == (64 + 100, 64 + 100)
    pre = [_record("pre_llm", 26), dataclasses.replace(_record("pre_llm", 20), group=1)]
    assert harness.tokens_seen(tower + pre, 256, depth=4) == (46.0, 46)


def test_pareto_front_keeps_exactly_the_undominated_results():
    import random

    rng = random.Random(0)
    results = [
        harness.Result(f"p{i}", 0.1, round(rng.random(), 1), tokens=float(rng.randint(1, 10)))
        for i in range(40)
    ]
    front = harness.pareto_front(results + [harness.Result("uncounted", 0.1, 1.0)])
    assert front and all(r.tokens is not None for r in front)
    assert [r.tokens for r in front] == sorted(r.tokens for r in front)
    for r in results:
        better = [o for o in results if o.tokens <= r.tokens and o.accuracy >= r.accuracy and o != r]
        strictly = [o for o in better if o.tokens < r.tokens or o.accuracy > r.accuracy]
        assert (r in front) == (not strictly)
    assert harness.varying_budgets(
        [harness.Result("fixed", 0.1, 1.0, kept=[26, 26]), harness.Result("auto", 0.1, 1.0, kept=[20, 31])]
    ) == [harness.Result("auto", 0.1, 1.0, kept=[20, 31])]


def test_toy2_questions_count_the_tokens_each_config_keeps(vlm2):
    model, processor = vlm2
    examples = data.vlm_examples(processor, "toy2", limit=5)
    assert [e.kind for e in examples] == ["color_at", "shape_at", "where", "count", "total"]
    assert all(e.tokens == 256 for e in examples)
    assert [e.region is None for e in examples] == [False, False, False, True, True]
    decode = lambda ids: processor.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    configs = [
        ("unpruned", None, None),
        ("divprune", 1.0, tp.DivPrune(1.0)),
        ("uniform", 0.1, tp.UniformPrune(0.1)),
        ("fastv", 0.25, harness.visual_pruner("fastv", 0.25, depth=4)),
    ]
    results = harness.evaluate(model, decode, examples, configs, progress=False, depth=4)
    assert [r.tokens for r in results] == [256.0, 256.0, 26.0, (2 * 256 + 2 * 64) / 4]
    assert [r.kept for r in results] == [[256] * 5, [256] * 5, [26] * 5, [64] * 5]
    assert results[1].accuracy == results[0].accuracy


def test_cli_on_toy2_reports_tokens_and_the_pareto_front(tmp_path, vlm2, monkeypatch, capsys):
    loaded = []
    monkeypatch.setattr(cli, "_load_vlm", lambda model, device: loaded.append(model) or vlm2)
    args = _cli_args("vlm", tmp_path, data="toy2", pruners=("divprune", "uniform"), budgets=(0.1,), limit=2)
    assert cli.run(args) == 0
    assert loaded == ["toy-vlm-2"]
    report = json.loads((tmp_path / "accuracy_vs_budget_vlm_toy2.json").read_text())
    assert [r["tokens"] for r in report["results"]] == [256.0, 26.0, 26.0]
    assert (tmp_path / "accuracy_vs_tokens_vlm_toy2.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "| pruner | budget | tokens | accuracy |" in printed and "Pareto front" in printed
    assert cli.resolve_model("vlm", "toy", "toy") == "toy-vlm"
    assert cli.resolve_model("vlm", "toy", "q.jsonl") == "toy-vlm"
    assert cli.resolve_model("vlm", "some/model", "toy2") == "some/model"


def test_adaptive_configs_keep_their_budget_on_average_over_the_calibration_images(vlm2):
    model, processor = vlm2
    calibration = data.vlm_examples(processor, "toy2", limit=6, seed=data.CALIBRATION_SEED)
    assert [e.answer for e in calibration] != [
        e.answer for e in data.vlm_examples(processor, "toy2", limit=6)
    ]
    configs = [
        ("cdpruner-adaptive", 0.1, harness.visual_pruner("cdpruner-adaptive", 0.1, depth=4)),
        ("divprune", 0.1, tp.DivPrune(0.1)),
        ("cdpruner-relevance", 0.1, harness.visual_pruner("cdpruner-relevance", 0.1, depth=4)),
        (
            "cdpruner-relevance-recycle",
            0.1,
            harness.visual_pruner("cdpruner-relevance-recycle", 0.1, depth=4),
        ),
    ]
    calibrated = harness.calibrated(model, calibration, configs)
    adaptive, relevance, recycled = calibrated[0][2], calibrated[2][2], calibrated[3][2]
    assert adaptive.pruner.budget == relevance.pruner.budget == 1.0 and calibrated[1] == configs[1]
    assert relevance.rule == "relevance" and relevance.min_tokens == configs[2][2].min_tokens
    # Recycle keeps its slots and wraps the same calibration
    assert isinstance(recycled, tp.Recycle) and recycled.slots == configs[3][2].slots
    assert recycled.pruner == relevance and harness.describe(recycled) == harness.describe(relevance)
    assert harness.describe(adaptive) == f"target={adaptive.target:.8g}"
    seen = harness.visual_tokens(model, calibration, adaptive.needs)
    assert len(seen) == 6 and all(t.text is not None and len(t) == 256 for t in seen)
    counts = [len(adaptive.select(tokens).indices) for tokens in seen]
    assert sum(counts) / len(counts) <= tp.DivPrune(0.1).keep_count(256) == 26
    by_relevance = [len(relevance.select(tokens).indices) for tokens in seen]
    assert sum(by_relevance) / len(by_relevance) <= 26 and min(by_relevance) >= 13
    decode = lambda ids: processor.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    result = harness.evaluate(model, decode, calibration, calibrated[:1], progress=False, depth=4)[0]
    assert result.kept == counts
