"""The demo app's tab functions, called directly on the bundled reference models (no server, no browser)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tokenprune as tp
from tokenprune import registry
from tokenprune.demos.app import checks, long_context, models, rag, sweep, ui, vision
from tokenprune.demos.app.measurement import layer_tokens
from tokenprune.stats import PruneRecord
from tokenprune.zoo import models as toy_models
from tokenprune.zoo import scenes

SIDE = scenes.IMAGE_SIZE // toy_models.PATCH_SIZE  # toy-vlm patches per image side
PATCHES = SIDE * SIDE


@pytest.fixture(scope="module")
def demo():
    return models.Demo(models.load_reference("toy-vlm"), models.load_reference("toy-lm"))


@pytest.fixture(scope="module")
def scene():
    return vision.generated_scene(1000)


def record(stage, before, after, layer=None, sample=0):
    return PruneRecord(stage, "X", sample, 0, before, after, tuple(range(after)), (4, 4), 0.0, layer)


def test_layer_tokens_counts_each_stage_from_where_it_acts():
    records = [
        record("pre_llm", 16, 8),
        record("llm", 8, 4, layer=2),
        record("llm", 16, 1, layer=1, sample=1),  # other samples do not count
    ]
    assert layer_tokens(records, 30, 4) == [22, 22, 18, 18]
    assert layer_tokens([record("prefill", 100, 25, layer=1)], 100, 3) == [25, 25, 25]
    assert layer_tokens([], 7, 2) == [7, 7]
    # in-tower steps (their layer is a tower block) shorten every decoder layer
    tower = [record("in_tower", 16, 12, layer=3), record("in_tower", 12, 8, layer=5), record("pre_llm", 8, 4)]
    assert layer_tokens(tower, 30, 2) == [18, 18]


def test_overlay_darkens_exactly_the_dropped_patches():
    from PIL import Image

    image = Image.new("RGB", (40, 40), (200, 200, 200))
    drawn = np.asarray(vision.overlay(image, (2, 2), (0, 3), width=40)).astype(int)
    centres = {0: (10, 10), 1: (10, 30), 2: (30, 10), 3: (30, 30)}  # (y, x) of each patch of a 2x2 grid
    for index, (y, x) in centres.items():
        if index in (0, 3):
            assert (drawn[y, x] == 200).all()
        else:
            assert (drawn[y, x] < 100).all()
    with pytest.raises(ValueError, match="2-D patch grid"):
        vision.overlay(image, (2, 2, 2), (0,))


def test_overlay_keeps_the_grid_aspect_and_refuses_non_spatial_grids():
    from PIL import Image

    image = Image.new("RGB", (60, 30), (200, 200, 200))
    assert vision.overlay(image, (2, 4), (0,), width=80).size == (80, 40)
    assert not vision.spatial((1, 20)) and not vision.spatial((2, 3, 3)) and vision.spatial((3, 5))
    with pytest.raises(ValueError, match="2-D patch grid"):
        vision.overlay(image, (1, 20), (0,))


def test_vision_takes_any_uploaded_image(demo):
    from PIL import Image

    upload = Image.new("RGBA", (120, 64), (10, 200, 30, 128))  # not square, with alpha
    result = vision.run_vision(demo.vlm, upload, "what color is at a1 ?", ["uniform"], 0.5, repeats=1)
    assert vision.processed_view(upload, demo.vlm.processor).size == (64, 64)  # the processor's center crop
    assert [row["image tokens kept"] for row in result.rows] == ["all", f"{PATCHES // 2} / {PATCHES}"]
    assert len(result.overlays) == 1 and result.overlays[0][0].size == (
        vision.OVERLAY_SIZE,
        vision.OVERLAY_SIZE,
    )


def test_uploads_open_as_images_or_say_they_are_not(tmp_path):
    import base64
    import io

    from PIL import Image

    picture = Image.new("RGBA", (20, 10), (1, 2, 3, 4))
    path = tmp_path / "scene.png"
    picture.save(path)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    for value in (str(path), {"path": str(path), "orig_name": "scene.png"}, {"path": None, "url": data_url}):
        opened = vision.as_image(value)
        assert opened.mode == "RGB" and opened.size == (20, 10) and opened.getpixel((0, 0)) == (1, 2, 3)
    assert vision.as_image(None) is None and vision.as_image(picture) is picture
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="'notes.png' is not an image"):
        vision.as_image({"path": str(tmp_path / "notes.png"), "orig_name": "notes.png"})


def test_vision_rows_follow_the_stats_and_overlays_show_the_kept_patches(demo, scene):
    image, question, _ = scene
    result = vision.run_vision(demo.vlm, image, question, ["divprune", "fastv"], 0.25, repeats=1)
    assert [row["pruner"] for row in result.rows] == ["unpruned", "divprune @ 0.25", "fastv @ 0.25"]
    unpruned, divprune, fastv = result.measurements
    length = unpruned.layer_tokens[0]
    assert unpruned.layer_tokens == [length] * 4 and result.rows[0]["image tokens kept"] == "all"
    dropped = PATCHES - PATCHES // 4  # a quarter of the image tokens reach the LLM
    assert divprune.layer_tokens == [length - dropped] * 4
    assert fastv.layer_tokens == [length] * 2 + [length - dropped] * 2  # FastV prunes before layer 2
    for row, measurement in zip(result.rows[1:], result.measurements[1:]):
        assert row["image tokens kept"] == f"{PATCHES // 4} / {PATCHES}"
        assert row["tokens prefilled"] == round(sum(measurement.layer_tokens) / 4)
        assert row["prefill ms"] > 0 and row["total ms"] > 0
    for row, measurement in zip(result.rows, result.measurements):
        # median ratio, then the smallest and largest ratio of one round, from the same timed runs
        ratios = [b / r for b, r in zip(result.measurements[0].prefill_runs, measurement.prefill_runs)]
        median = result.measurements[0].prefill_s / measurement.prefill_s
        assert row["prefill speedup (min-max)"] == f"{median:.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        assert len(measurement.prefill_runs) == 1 and len(measurement.total_runs) == 3
    assert list(result.rows[0]) == list(vision.COLUMNS)
    assert len(result.overlays) == 2
    from PIL import Image

    view = vision.processed_view(image, demo.vlm.processor).resize((vision.OVERLAY_SIZE,) * 2, Image.NEAREST)
    cell = vision.OVERLAY_SIZE // SIDE
    for (picture, caption), measurement in zip(result.overlays, result.measurements[1:]):
        kept = set(vision.image_selections(measurement.records)[-1].kept_indices)
        assert len(kept) == PATCHES // 4 and caption.endswith(f"{PATCHES // 4} of {PATCHES} patches kept")
        drawn, original = np.asarray(picture).astype(int), np.asarray(view).astype(int)
        for index in range(PATCHES):
            y, x = (index // SIDE) * cell + cell // 2, (index % SIDE) * cell + cell // 2
            assert (drawn[y, x] == original[y, x]).all() == (index in kept)


@pytest.mark.parametrize("name", ["feather", "zerotprune"])
def test_multi_stage_pruners_report_kept_of_the_image_s_tokens(demo, scene, name):
    image, question, _ = scene
    result = vision.run_vision(demo.vlm, image, question, [name], 0.25, repeats=1)
    # Feather selects at two decoder layers, ZeroTPrune before both blocks of the toy's tower
    first, last = vision.image_selections(result.measurements[1].records)
    assert first.tokens_before == PATCHES and last.tokens_before == first.tokens_after
    assert result.rows[1]["image tokens kept"] == f"{last.tokens_after} / {PATCHES}"
    assert set(last.kept_indices) <= set(first.kept_indices)  # original patch indices at every stage
    assert result.overlays[0][1].endswith(f"{last.tokens_after} of {PATCHES} patches kept")


def test_vision_answers_are_the_unpruned_model_s_at_full_budget(demo, scene):
    image, question, _ = scene
    result = vision.run_vision(
        demo.vlm, image, question, ["divprune", "fastv"], 1.0, max_new_tokens=3, repeats=1
    )
    inputs = demo.vlm.processor(text=f"<image> {question}", images=image, return_tensors="pt")
    with torch.no_grad():
        output = demo.vlm.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    reference = demo.vlm.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert [row["answer"] for row in result.rows] == [reference.strip()] * 3


@pytest.mark.parametrize(
    ("image", "question", "pruners", "budget", "message"),
    [
        (None, "what color is at a1 ?", ["divprune"], 0.5, "Upload an image"),
        ("not an image", "what color is at a1 ?", ["divprune"], 0.5, "Expected an image"),
        ("scene", "   ", ["divprune"], 0.5, "Enter a question"),
        ("scene", "what color is at a1 ?", [], 0.5, "at least one pruner"),
        ("scene", "what color is at a1 ?", ["magic"], 0.5, "Unknown pruner"),
        ("scene", "what color is at a1 ?", ["divprune"], 0.0, r"in \(0, 1\]"),
        ("scene", "what color is at a1 ?", ["divprune"], 1.5, r"in \(0, 1\]"),
    ],
)
def test_vision_bad_input_is_a_clear_error(demo, scene, image, question, pruners, budget, message):
    image = scene[0] if image == "scene" else image
    with pytest.raises(ValueError, match=message):
        vision.run_vision(demo.vlm, image, question, pruners, budget, repeats=1)


def test_long_context_tokens_per_layer_come_from_the_selection_records(demo):
    prompt, _ = long_context.retrieval_task(1000, 512)
    result = long_context.run_long_context(
        demo.lm, prompt, ["lazyskip", "gemfilter"], 0.1, max_new_tokens=2, repeats=1
    )
    unpruned, lazy, gem = result.measurements
    length = len(demo.lm.tokenizer(prompt).input_ids)
    depth = demo.lm.model.config.num_hidden_layers
    assert unpruned.layer_tokens == [length] * depth and result.rows[0]["prompt tokens"] == length
    schedule = {r.layer: r for r in lazy.records}
    # the default schedule at a quarter, half and three quarters of the depth
    assert sorted(schedule) == [layer for layer, _ in tp.LazySkip().for_depth(depth).schedule]
    assert lazy.layer_tokens[0] == length
    for layer in range(1, depth):  # every record removes tokens from its layer on
        removed = schedule[layer].tokens_before - schedule[layer].tokens_after if layer in schedule else 0
        assert lazy.layer_tokens[layer] == lazy.layer_tokens[layer - 1] - removed
    (selection,) = gem.records
    assert gem.layer_tokens == [selection.tokens_after] * depth
    assert selection.tokens_after == round(0.1 * length)
    assert [row["tokens per layer"] for row in result.rows] == [
        " · ".join(map(str, m.layer_tokens)) for m in result.measurements
    ]
    figure = long_context.layer_figure(result.measurements)
    bars = [[bar.get_height() for bar in container] for container in figure.axes[0].containers]
    assert bars == [m.layer_tokens for m in result.measurements]


def test_long_context_at_full_budget_answers_like_the_unpruned_model(demo):
    prompt, _ = long_context.retrieval_task(1001, 512)
    result = long_context.run_long_context(demo.lm, prompt, ["gemfilter"], 1.0, max_new_tokens=2, repeats=1)
    assert result.rows[0]["answer"] == result.rows[1]["answer"]


def test_long_context_gemfilter_selects_at_the_chosen_layer(demo):
    prompt, _ = long_context.retrieval_task(1000, 512)
    default = long_context.run_long_context(demo.lm, prompt, ["gemfilter"], 0.5, max_new_tokens=1, repeats=1)
    chosen = long_context.run_long_context(
        demo.lm, prompt, ["gemfilter"], 0.5, max_new_tokens=1, repeats=1, filter_layer=1
    )
    assert [r.layer for r in default.measurements[1].records] == [round(0.4 * demo.lm.depth)]
    assert [r.layer for r in chosen.measurements[1].records] == [1]
    with pytest.raises(ValueError, match="filter_layer must lie in"):
        long_context.run_long_context(
            demo.lm, prompt, ["gemfilter"], 0.5, repeats=1, filter_layer=demo.lm.depth
        )


def test_long_context_bad_input(demo):
    with pytest.raises(ValueError, match="Enter a prompt"):
        long_context.run_long_context(demo.lm, " ", ["lazyskip"], 0.5)
    with pytest.raises(ValueError, match="at most 2048"):
        long_context.run_long_context(demo.lm, " ".join(["k1 v1 ;"] * 800), ["lazyskip"], 0.5)
    with pytest.raises(ValueError, match="Unknown pruner"):
        long_context.run_long_context(demo.lm, "k1 v1 ; k2 v2 ; k3 v3 ; ? k1", ["divprune"], 0.5)


def test_rag_counts_blocks_and_extractive_answers():
    from tokenprune.context import HtmlPruner, clean_html

    html = rag.bundled_pages()["harbour-bridge-news"].read_text()
    question = rag.page_question(html)
    assert question == "How much did the bridge restoration cost?"
    result = rag.run_rag(html, question, 150)
    reference = HtmlPruner(budget=150, output="markdown").prune(html, query=question)
    assert result.unit == "words + punctuation" and list(result.counts[0]) == list(rag.COUNT_COLUMNS)
    words = [row["count"] for row in result.counts]
    counter = HtmlPruner(budget=150).counter
    assert words == [counter(html), counter(clean_html(html, output="markdown")), reference.tokens_after]
    assert words[2] <= 150 < words[1] < words[0]
    assert result.pruned == reference.text
    kept = [text.strip() for text, label in result.blocks if label == "kept"]
    assert kept == [block.text for block in reference.kept]
    assert any(label == "removed" for _, label in result.blocks)
    for answer in result.answers:
        assert answer["answer"] == (
            "The restoration cost 3.8 million pounds, about 600,000 pounds more than the council's first estimate."
        )
        assert answer["how"].startswith("best block") and list(answer) == list(rag.ANSWER_COLUMNS)


def test_rag_extractive_answers_are_the_scorer_s_best_blocks():
    from tokenprune.context import BM25Scorer, clean_html

    html = rag.bundled_pages()["sourdough-howto"].read_text()
    question = "Why is there a grey liquid on top of my starter?"
    result = rag.run_rag(html, question, 60)
    texts = [text for text, _ in result.blocks]
    relevance = BM25Scorer().relevance(question, texts)
    long_enough = [i for i, text in enumerate(texts) if len(text.split()) >= rag.MIN_ANSWER_WORDS]
    best = max(long_enough, key=lambda i: relevance[i])
    kept = [i for i in long_enough if result.blocks[i][1] == "kept"]
    best_kept = max(kept, key=lambda i: relevance[i])
    page_text = " ".join(clean_html(html, output="text").split())
    for answer, block in zip(result.answers, (best, best_kept)):
        # the best block, widened to the whole sentences of the page it lies in
        assert texts[block].strip() in answer["answer"] and answer["answer"] in page_text
        assert answer["answer"].endswith((".", "!", "?"))
        assert answer["answer"][0].isupper()  # where a sentence starts, here a paragraph's
    assert "hooch" in result.answers[0]["answer"]


def test_rag_with_a_text_model_counts_its_tokens_and_answers_by_generation(demo):
    import copy

    from tokenprune.context import HtmlPruner

    html = rag.bundled_pages()["harbour-bridge-news"].read_text()
    short = copy.deepcopy(demo.lm.model)
    short.config.max_position_embeddings = 400  # the whole page does not fit, the pruned one does
    lm = models.Loaded(short, demo.lm.tokenizer, "short-lm")
    result = rag.run_rag(html, "How much did the bridge restoration cost?", 150, lm=lm)
    assert result.unit == "tokens"
    tokens = [row["count"] for row in result.counts]
    counter = HtmlPruner(budget=150, tokenizer=lm.tokenizer).counter
    assert tokens[0] == counter(html) and tokens[2] <= 150
    whole, pruned = result.answers
    assert whole["answer"] == "" and "more than its 400-token context" in whole["how"]
    assert pruned["how"].startswith("short-lm, ") and "prompt tokens" in pruned["how"]


def test_generated_answers_end_at_a_sentence_end():
    assert (
        rag.to_sentence_end("It cost 3.8 million pounds. The council paid") == "It cost 3.8 million pounds."
    )
    assert rag.to_sentence_end('He said "yes." Then') == 'He said "yes."'
    assert rag.to_sentence_end("no sentence ends") == "no sentence ends …"  # marked as cut
    assert rag.to_sentence_end("") == ""


def test_rag_without_pruning_keeps_every_block():
    html = rag.bundled_pages()["tidal-energy-wiki"].read_text()
    result = rag.run_rag(html, rag.page_question(html), 2000)
    assert all(label == "kept" for _, label in result.blocks)
    assert "18 seabed-mounted turbines" in result.pruned
    assert result.answers[0]["answer"] == result.answers[1]["answer"]


@pytest.mark.parametrize(
    ("html", "question", "budget", "message"),
    [
        ("", "q?", 100, "Paste an HTML page"),
        ("<p>text</p>", "", 100, "Enter a question"),
        ("<p>text</p>", "q?", 0, "tokens >= 1"),
        ("<p>text</p>", "q?", "many", "number of tokens"),
        ("<script>x()</script>", "q?", 100, "no visible text"),
    ],
)
def test_rag_bad_input(html, question, budget, message):
    with pytest.raises(ValueError, match=message):
        rag.run_rag(html, question, budget)


def test_bundled_pages_are_small_and_each_suggests_a_question():
    pages = rag.bundled_pages()
    assert len(pages) >= 3
    assert sum(path.stat().st_size for path in pages.values()) < 300_000
    for path in pages.values():
        assert rag.page_question(path.read_text())


def test_sweep_reports_every_pruner_and_budget(demo, tmp_path):
    result = sweep.run_sweep(demo.vlm, "vision", ["uniform"], "0.25, 0.5", 3, tmp_path)
    assert [(p["pruner"], p["budget"]) for p in result.points] == [("uniform", 0.25), ("uniform", 0.5)]
    assert all(0.0 <= p["accuracy"] <= 1.0 and p["speedup"] > 0 for p in result.points)
    assert all(0 < p["speedup min"] <= p["speedup max"] for p in result.points)
    assert result.plot.is_file() and result.plot.parent == tmp_path
    from PIL import Image

    with Image.open(result.plot) as figure:  # drawn at the size the page shows it
        assert figure.size == (
            round(sweep.FIGURE_INCHES[0] * sweep.DPI),
            round(sweep.FIGURE_INCHES[1] * sweep.DPI),
        )
    assert "| uniform | 0.25 |" in result.table
    lm = sweep.run_sweep(demo.lm, "long context", ["lazyskip", "gemfilter"], "0.5", 2, tmp_path)
    assert [(p["pruner"], p["budget"]) for p in lm.points] == [("lazyskip", 0.5), ("gemfilter", 0.5)]
    assert lm.plot.is_file() and "filter_layer=" in lm.table
    with pytest.raises(ValueError, match="fractions"):
        sweep.run_sweep(demo.vlm, "vision", ["uniform"], "0.25,2", 3, tmp_path)
    with pytest.raises(ValueError, match="Unknown pruner"):
        sweep.run_sweep(demo.lm, "long context", ["uniform"], "0.5", 3, tmp_path)


def test_loading_a_checkpoint_swaps_one_model_or_says_why_not(demo, tmp_path):
    with pytest.raises(ValueError, match="Could not load"):
        models.load_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="Enter a checkpoint"):
        models.load_checkpoint("  ")
    from tokenprune import zoo

    fresh = models.Demo(demo.vlm, demo.lm)
    assert fresh.text_lm() is None  # the toy LM reads only its retrieval vocabulary
    message = fresh.load(str(zoo.path("toy-lm")))
    assert "language model" in message and fresh.lm is not demo.lm and fresh.vlm is demo.vlm
    assert fresh.text_lm() is fresh.lm
    assert "vision model" in fresh.load(str(zoo.path("toy-vlm"))) and fresh.vlm is not demo.vlm


def test_failures_become_messages_not_traces(caplog):
    def broken():
        raise ValueError("Enter a question.")

    # outside a request gr.Warning is a Python warning; inside one, a toast in the page
    with pytest.warns(UserWarning, match="Enter a question"):
        assert ui._safely(broken, (None, None)) == (None, None, "**Error:** Enter a question.")
    # bad input logs one line; anything else is a bug and logs its traceback
    (bad_input,) = caplog.records
    assert bad_input.getMessage() == "bad input: Enter a question." and bad_input.exc_info is None
    caplog.clear()
    with pytest.warns(UserWarning, match="ZeroDivisionError"):
        assert ui._safely(lambda: 1 / 0, ())[-1] == "**Error:** ZeroDivisionError: division by zero"
    (bug,) = caplog.records
    assert bug.exc_info is not None and bug.exc_info[0] is ZeroDivisionError


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "whole number, got None"),
        ("x", "whole number, got 'x'"),
        (0, "in 1-64; got 0"),
        (2.5, "got 2.5"),
    ],
)
def test_counts_out_of_range_are_messages_not_clamped(value, message):
    assert checks.check_count(64.0, "Max new tokens", 1, 64) == 64
    with pytest.raises(ValueError, match=message):
        checks.check_count(value, "Max new tokens", 1, 64)


def test_build_app_does_not_launch(demo):
    import gradio as gr

    assert isinstance(ui.build_app(demo), gr.Blocks)


def test_cli_demo_rejects_a_bad_port_before_loading_anything():
    from tokenprune.cli import main

    with pytest.raises(SystemExit, match="--port"):
        main(["demo", "--port", "0"])


def test_pruners_are_the_harness_ones():
    from tokenprune.eval import harness

    assert registry.pruner_names(drops="visual") == checks.VISUAL_PRUNERS
    assert registry.pruner_names(drops="prompt") == checks.PROMPT_PRUNERS
    assert isinstance(harness.visual_pruner("fopru", 0.5, 4), tp.FoPru)
    assert isinstance(harness.visual_pruner("fastv", 0.5, 4), tp.FastV)
    assert isinstance(harness.prompt_pruner("lazyskip", 0.1, 4), tp.LazySkip)
