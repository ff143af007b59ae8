"""tokenprune demo: a Gradio app comparing pruned and unpruned inference on real models.

    tokenprune demo [--model ID_OR_PATH] [--port 7860] [--host 127.0.0.1]
    make demo                                   # the bundled reference models, no downloads

Tabs: Vision (visual-token pruners side by side, kept patches drawn on the image), Long context
(LazySkip / GemFilter: time to first token and tokens per layer), RAG / HTML (clean and prune a page,
kept and removed blocks), Sweep (accuracy and time to answer vs budget through `tokenprune.eval`).

Without `--model` the app runs the committed toy-vlm and toy-lm (`tokenprune.zoo`). A vision-language
checkpoint replaces toy-vlm, a causal LM replaces toy-lm. The tab functions below are plain Python
(they raise ValueError with a message for bad input); `build_app` wraps them so that every failure
shows as a message in the page.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

import tokenprune as tp
from tokenprune.eval import cli as eval_cli
from tokenprune.eval import harness
from tokenprune.stats import PruneRecord

PAGES = Path(__file__).parent / "pages"
VISUAL_PRUNERS = tuple(eval_cli.VISUAL_PRUNERS.split(","))
PROMPT_PRUNERS = tuple(eval_cli.PROMPT_PRUNERS.split(","))
DEFAULT_PORT = 7860
OVERLAY_SIZE = 288
MIN_ANSWER_WORDS = 6
# the toy scenes are 96 px: show them enlarged with sharp pixels
CSS = "#vision-image img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }"
TOY_TIMING = (
    " The reference models are tiny (a few layers, 96-wide): fixed per-forward costs weigh heavily, so"
    " prefill speedups are smaller and noisier than on a real checkpoint (`--model`)."
)
log = logging.getLogger("tokenprune.demo")


# ----------------------------------------------------------------------------------------- models


@dataclass
class Loaded:
    """A model with its processor (VLM) or tokenizer (LM); `name` says where it came from."""

    model: object
    processor: object
    name: str
    reference: bool = False  # a bundled toy model (tokenprune.zoo)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def depth(self) -> int:
        config = self.model.config
        return getattr(config, "text_config", config).num_hidden_layers


def load_checkpoint(id_or_path: str) -> tuple[str, Loaded]:
    """("vlm" | "lm", Loaded) for a local directory or hub id; ValueError with the reason if it fails."""
    id_or_path = (id_or_path or "").strip()
    if not id_or_path:
        raise ValueError("Enter a checkpoint: a local directory or a Hugging Face model id.")
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    from tokenprune.adapters.transformers import find_adapter

    try:
        config = AutoConfig.from_pretrained(id_or_path)
        if hasattr(config, "vision_config"):
            kind = "vlm"
            model = AutoModelForImageTextToText.from_pretrained(id_or_path, attn_implementation="sdpa")
            processor = AutoProcessor.from_pretrained(id_or_path)
        else:
            kind = "lm"
            model = AutoModelForCausalLM.from_pretrained(id_or_path, attn_implementation="sdpa")
            processor = AutoTokenizer.from_pretrained(id_or_path)
    except Exception as error:  # any loading failure (missing files, no network, bad config) is reported
        raise ValueError(f"Could not load {id_or_path!r}: {type(error).__name__}: {error}") from error
    find_adapter(model)  # TypeError naming the supported classes
    return kind, Loaded(model.eval(), processor, str(id_or_path))


def load_reference(name: str) -> Loaded:
    from tokenprune import zoo

    model, processor = zoo.load_vlm(name) if name == "toy-vlm" else zoo.load_lm(name)
    return Loaded(model, processor, name, reference=True)


# ------------------------------------------------------------------------------------ measurement


@dataclass
class Measurement:
    """One model run: the answer, median prefill time (a forward of the prompt), the time of the whole
    greedy generation, and the sequence length at every decoder layer."""

    label: str
    answer: str
    prefill_s: float
    total_s: float
    layer_tokens: list[int]
    records: list[PruneRecord] = field(default_factory=list)

    @property
    def prefilled(self) -> int:
        """Token-layers of the prefill divided by the depth: tokens an unpruned model of equal cost would see."""
        return round(sum(self.layer_tokens) / len(self.layer_tokens))


def layer_tokens(records: list[PruneRecord], length: int, depth: int) -> list[int]:
    """Sequence length of sample 0 at every decoder layer: pre-LLM and prefill selections shorten all
    layers, in-LLM selections the layers from theirs on."""
    tokens = [length] * depth
    for record in records:
        if record.sample != 0:
            continue
        removed = record.tokens_before - record.tokens_after
        first = record.layer if record.stage == "llm" else 0
        for layer in range(first, depth):
            tokens[layer] -= removed
    return tokens


@contextmanager
def applied(model, pruner):
    """`tp.apply` for a pruner, nothing for None (the unpruned model)."""
    if pruner is None:
        yield None
        return
    with tp.apply(model, pruner) as handle:
        yield handle


@torch.no_grad()
def measure_all(
    loaded: Loaded, inputs: dict, configs: list, max_new_tokens: int, repeats: int
) -> list[Measurement]:
    """Median prefill time of every (label, pruner) config over `repeats` rounds, then one greedy
    generation each. Configs take turns within a round, so changes in machine load hit them alike."""
    model = loaded.model
    length = inputs["input_ids"].shape[1]
    times: dict[str, list[float]] = {label: [] for label, _ in configs}
    records: dict[str, list[PruneRecord]] = {}
    for round_ in range(repeats + 1):  # round 0 warms up
        for label, pruner in configs:
            with applied(model, pruner) as handle:
                started = time.perf_counter()
                model(**inputs)
                elapsed = time.perf_counter() - started
                records[label] = list(handle.stats) if handle is not None else []
            if round_:
                times[label].append(elapsed)
    measurements = []
    for label, pruner in configs:
        with applied(model, pruner):
            started = time.perf_counter()
            output = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=None
            )
            total = time.perf_counter() - started
        answer = loaded.tokenizer.decode(output[0, length:], skip_special_tokens=True).strip()
        tokens = layer_tokens(records[label], length, loaded.depth)
        measurements.append(
            Measurement(label, answer, statistics.median(times[label]), total, tokens, records[label])
        )
    return measurements


def _check_budget(budget) -> float:
    try:
        budget = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"The budget must be a number, got {budget!r}.") from None
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"The budget is the fraction of tokens kept, in (0, 1]; got {budget:g}.")
    return budget


def _check_names(names, supported: tuple[str, ...]) -> list[str]:
    names = list(names or [])
    if not names:
        raise ValueError(f"Pick at least one pruner ({', '.join(supported)}).")
    unknown = [n for n in names if n not in supported]
    if unknown:
        raise ValueError(f"Unknown pruner(s) {unknown}; supported: {', '.join(supported)}.")
    return names


def _check_question(question) -> str:
    if not isinstance(question, str) or not question.strip():
        raise ValueError("Enter a question.")
    return question.strip()


# ----------------------------------------------------------------------------------------- vision


def vision_prompt(processor, question: str) -> str:
    """The checkpoint's chat template around one image and the question, or `<image> question`."""
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return f"{processor.image_token} {question}"


def processed_view(image, processor):
    """The part of the image the model sees, as the processor frames it (CLIP-style center crop)."""
    image_processor = getattr(processor, "image_processor", None)
    if getattr(image_processor, "do_center_crop", False):
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    return image


def spatial(grid) -> bool:
    """A 2-D patch grid (LLaVA, Qwen-VL images); not a video's (t, h, w) nor a token row (anyres)."""
    return grid is not None and len(grid) == 2 and min(grid) > 1


def overlay(image, grid: tuple[int, ...], kept: tuple[int, ...], width: int = OVERLAY_SIZE):
    """The image with dropped patches darkened and the kept ones outlined, `width` pixels wide."""
    from PIL import Image, ImageDraw

    if not spatial(grid):
        raise ValueError(f"an overlay needs a 2-D patch grid, got {grid}")
    rows, cols = grid
    height = round(width * rows / cols)
    view = image.convert("RGB").resize((width, height), Image.NEAREST)
    shade = Image.new("RGBA", view.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(shade)
    kept = set(kept)
    for index in range(rows * cols):
        r, c = divmod(index, cols)
        box = (
            c * width // cols,
            r * height // rows,
            (c + 1) * width // cols - 1,
            (r + 1) * height // rows - 1,
        )
        if index in kept:
            draw.rectangle(box, outline=(40, 220, 90, 255), width=2)
        else:
            draw.rectangle(box, fill=(0, 0, 0, 160))
    return Image.alpha_composite(view.convert("RGBA"), shade).convert("RGB")


def image_selections(records: list[PruneRecord]) -> list[PruneRecord]:
    """Selections of sample 0's first image, in the order they ran (the last one reached the last layer)."""
    return [r for r in records if r.sample == 0 and r.group == 0 and r.stage in ("pre_llm", "llm")]


@dataclass
class VisionResult:
    rows: list[dict]
    overlays: list[tuple[object, str]]  # (PIL image, caption)
    measurements: list[Measurement]


def run_vision(
    vlm: Loaded, image, question, pruners, budget, max_new_tokens: int = 4, repeats: int = 5
) -> VisionResult:
    """Unpruned model and each pruner on one image and question."""
    from PIL import Image

    if image is None:
        raise ValueError("Upload an image or generate a scene first.")
    if not isinstance(image, Image.Image):
        raise ValueError(f"Expected an image, got {type(image).__name__}.")
    question = _check_question(question)
    names = _check_names(pruners, VISUAL_PRUNERS)
    budget = _check_budget(budget)
    image = image.convert("RGB")
    processor = vlm.processor
    inputs = dict(processor(text=vision_prompt(processor, question), images=image, return_tensors="pt"))
    configs = [("unpruned", None)] + [
        (f"{name} @ {budget:g}", harness.visual_pruner(name, budget, vlm.depth)) for name in names
    ]
    measurements = measure_all(vlm, inputs, configs, max_new_tokens, repeats)
    base = measurements[0]
    view = processed_view(image, processor)
    rows, overlays = [], []
    for m in measurements:
        selections = image_selections(m.records)
        # kept of the image's own tokens: later stages select among what earlier ones kept
        available = selections[0].tokens_before if selections else None
        selection = selections[-1] if selections else None
        image_tokens = f"{selection.tokens_after} / {available}" if selection else "all"
        rows.append(
            {
                "pruner": m.label,
                "answer": m.answer,
                "image tokens kept": image_tokens,
                "LLM tokens per layer": " · ".join(map(str, m.layer_tokens)),
                "tokens prefilled": m.prefilled,
                "prefill ms": round(1e3 * m.prefill_s, 2),
                "prefill speedup": round(base.prefill_s / m.prefill_s, 2),
                "total ms": round(1e3 * m.total_s, 2),
            }
        )
        if selection is not None and spatial(selection.grid):
            caption = f"{m.label}: {selection.tokens_after} of {available} patches kept"
            overlays.append((overlay(view, selection.grid, selection.kept_indices), caption))
    return VisionResult(rows, overlays, measurements)


def as_image(value):
    """A PIL image from what the Image component sends unprocessed (None, a file payload with a path or
    a data: URL, or a path), so that a file that is no image becomes a message, not a Gradio error."""
    import base64
    import io

    from PIL import Image, UnidentifiedImageError

    if value is None or isinstance(value, Image.Image):
        return value
    name, source = value, value
    if isinstance(value, dict):
        name = value.get("orig_name") or value.get("path") or "pasted image"
        url = value.get("url") or ""
        source = (
            io.BytesIO(base64.b64decode(url.split(",", 1)[1]))
            if url.startswith("data:")
            else value.get("path")
        )
    try:
        with Image.open(source) as opened:
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError, TypeError, ValueError) as error:
        raise ValueError(
            f"The uploaded file {name!r} is not an image Pillow can read (PNG, JPEG, WebP, ...)."
        ) from error


def generated_scene(seed: int, index: int = 0):
    """(PIL image, question, answer) of a procedural scene the toy VLM was trained on."""
    from tokenprune.zoo import scenes

    sample = scenes.sample(int(seed), int(index))
    return scenes.to_pil(scenes.render([sample.scene])[0]), sample.question, sample.answer


# ----------------------------------------------------------------------------------- long context


@dataclass
class LongContextResult:
    rows: list[dict]
    measurements: list[Measurement]


def run_long_context(
    lm: Loaded, prompt, pruners, budget, max_new_tokens: int = 4, repeats: int = 5, filter_layer=None
) -> LongContextResult:
    """Unpruned prefill against LazySkip / GemFilter keeping `budget` of the prompt; GemFilter selects
    at `filter_layer` (default: 40 % of the depth)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("Enter a prompt, or generate a retrieval task.")
    names = _check_names(pruners, PROMPT_PRUNERS)
    budget = _check_budget(budget)
    inputs = lm.tokenizer(prompt, return_tensors="pt")
    inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    length = inputs["input_ids"].shape[1]
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    if limit is not None and length + max_new_tokens > limit:
        raise ValueError(
            f"The prompt has {length} tokens; {lm.name} handles at most {limit} (with the answer)."
        )
    if length < 8:
        raise ValueError(f"The prompt has {length} tokens; prefill skipping needs a longer one.")
    if filter_layer is not None:
        filter_layer = int(filter_layer)
    configs = [("unpruned", None)] + [
        (f"{name} @ {budget:g}", harness.prompt_pruner(name, budget, lm.depth, filter_layer))
        for name in names
    ]
    measurements = measure_all(lm, inputs, configs, max_new_tokens, repeats)
    base = measurements[0]
    rows = []
    for m in measurements:
        rows.append(
            {
                "method": m.label,
                "answer": m.answer,
                "prompt tokens": length,
                "tokens per layer": " · ".join(map(str, m.layer_tokens)),
                "tokens prefilled": m.prefilled,
                "TTFT ms": round(1e3 * m.prefill_s, 2),
                "TTFT speedup": round(base.prefill_s / m.prefill_s, 2),
                "total ms": round(1e3 * m.total_s, 2),
            }
        )
    return LongContextResult(rows, measurements)


def layer_figure(measurements: list[Measurement]):
    """Grouped bars: the sequence length each method's prefill runs through at every layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 2.8))
    width = 0.8 / len(measurements)
    for i, m in enumerate(measurements):
        layers = [layer + (i - (len(measurements) - 1) / 2) * width for layer in range(len(m.layer_tokens))]
        ax.bar(layers, m.layer_tokens, width, label=m.label)
    ax.set_xticks(range(len(measurements[0].layer_tokens)))
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("tokens")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    plt.close(figure)  # Gradio renders the figure object; pyplot need not keep it
    return figure


def retrieval_task(seed: int, length: int) -> tuple[str, str]:
    """(prompt, answer) of a key-value retrieval task the toy LM was trained on."""
    from tokenprune.zoo import retrieval

    sample = retrieval.sample(int(seed), 0, int(length))
    return sample.prompt, " ".join(sample.answer)


# -------------------------------------------------------------------------------------------- RAG


def bundled_pages() -> dict[str, Path]:
    return {path.stem: path for path in sorted(PAGES.glob("*.html"))}


def page_question(html: str) -> str:
    """The question a bundled page suggests (its `demo-question` meta tag), or ""."""
    found = re.search(r'<meta name="demo-question" content="([^"]*)"', html)
    return found.group(1) if found else ""


@dataclass
class RagResult:
    counts: list[dict]  # tokens per stage
    blocks: list[tuple[str, str]]  # (block text, "kept" | "removed") in page order
    pruned: str
    answers: list[dict]


def extractive_answer(relevance, texts: list[str], among: list[int]) -> tuple[str, float]:
    """The block among `among` that the pruner's scorer finds most relevant, with its relevance."""
    if not among:
        return "", 0.0
    best = max(among, key=lambda i: relevance[i])
    return texts[best], float(relevance[best])


@torch.no_grad()
def generated_answer(lm: Loaded, question: str, context: str, max_new_tokens: int = 32) -> tuple[str, str]:
    """(answer, how it was made): greedy generation from the context, or why there is none."""
    prompt = f"Context:\n{context}\n\nQuestion: {question}\nAnswer:"
    inputs = lm.tokenizer(prompt, return_tensors="pt")
    inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    length = inputs["input_ids"].shape[1]
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    if limit is not None and length + max_new_tokens > limit:
        return "", f"{lm.name}: the prompt has {length} tokens, more than its {limit}-token context"
    started = time.perf_counter()
    output = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    seconds = time.perf_counter() - started
    answer = lm.tokenizer.decode(output[0, length:], skip_special_tokens=True).strip()
    return answer, f"{lm.name}, {length} prompt tokens, {seconds:.2f} s"


def run_rag(html, question, budget, scorer: str = "bm25", lm: Loaded | None = None) -> RagResult:
    """Clean and prune a page for a question; answer from the whole cleaned page and from the pruned
    context: with `lm` (a real text model) by generation, otherwise extractively (the block the
    pruner's scorer ranks first), since the toy models cannot read English."""
    from tokenprune.context import HtmlPruner, clean_html

    if not isinstance(html, str) or not html.strip():
        raise ValueError("Paste an HTML page or pick a bundled one.")
    question = _check_question(question)
    try:
        budget = int(budget)
    except (TypeError, ValueError):
        raise ValueError(f"The budget is a number of tokens, got {budget!r}.") from None
    if budget < 1:
        raise ValueError(f"The budget is a number of tokens >= 1, got {budget}.")
    tokenizer = lm.tokenizer if lm is not None else None
    pruner = HtmlPruner(budget=budget, tokenizer=tokenizer, scorer=scorer, output="markdown")
    cleaned = clean_html(html, output="markdown")
    if not cleaned.strip():
        raise ValueError("The page has no visible text after cleaning.")
    result = pruner.prune(html, query=question)
    document, _ = pruner.document(html)
    kept = {(block.path, block.span) for block in result.kept}
    blocks = [
        (block.text + "\n", "kept" if (block.path, block.span) in kept else "removed")
        for block in document.tree.blocks
    ]
    unit = "tokens" if tokenizer is not None else "words + punctuation"
    raw, clean, pruned = result.tokens_before, pruner.counter(cleaned), result.tokens_after
    counts = [
        {"stage": "raw HTML", unit: raw, "% of raw": 100.0},
        {"stage": "cleaned (markdown)", unit: clean, "% of raw": round(100 * clean / raw, 1)},
        {"stage": f"pruned (budget {budget})", unit: pruned, "% of raw": round(100 * pruned / raw, 1)},
    ]
    answers = []
    if lm is not None:
        for context_name, context in (("whole cleaned page", cleaned), ("pruned context", result.text)):
            text, how = generated_answer(lm, question, context)
            answers.append({"context": context_name, "answer": text, "how": how})
    else:
        texts = [text for text, _ in blocks]
        relevance = pruner.scorer.relevance(question, texts)
        # headings and labels match the query's words without stating anything: answers come from
        # blocks of a few words at least
        statements = [i for i, text in enumerate(texts) if len(text.split()) >= MIN_ANSWER_WORDS]
        kept_statements = [i for i in statements if blocks[i][1] == "kept"]
        for context_name, among in (("whole cleaned page", statements), ("pruned context", kept_statements)):
            text, score = extractive_answer(relevance, texts, among)
            answers.append(
                {"context": context_name, "answer": text.strip(), "how": f"best block, relevance {score:.2f}"}
            )
    return RagResult(counts, blocks, result.text, answers)


# ------------------------------------------------------------------------------------------ sweep


@dataclass
class SweepResult:
    table: str  # markdown
    plot: Path  # accuracy vs budget (tokenprune.eval's plot)
    points: list[dict]  # pruner, budget, accuracy, speedup


def parse_budgets(text) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"Budgets are comma-separated fractions such as 0.1,0.25,0.5; got {text!r}."
        ) from None
    if not values or not all(0.0 < v <= 1.0 for v in values):
        raise ValueError(f"Budgets are fractions in (0, 1]; got {text!r}.")
    return values


def run_sweep(loaded: Loaded, task: str, pruners, budgets, questions: int, out_dir: Path) -> SweepResult:
    """Accuracy and time to answer vs budget on held-out toy questions, through `tokenprune.eval`
    (its tqdm bar drives the app's progress bar)."""
    from tokenprune.eval import data

    if task not in ("vision", "long context"):
        raise ValueError(f"Unknown task {task!r}; pick vision or long context.")
    supported = VISUAL_PRUNERS if task == "vision" else PROMPT_PRUNERS
    names = _check_names(pruners, supported)
    budgets = parse_budgets(budgets)
    questions = int(questions)
    if questions < 1:
        raise ValueError(f"Evaluate at least one question, got {questions}.")
    if task == "vision":
        prompt = vision_prompt(loaded.processor, "{question}")
        examples = data.vlm_examples(loaded.processor, "toy", questions, prompt=prompt)
        build = harness.visual_pruner
    else:
        examples = data.lm_examples(loaded.tokenizer, "toy", questions, lengths=(512, 1024))
        build = harness.prompt_pruner
    configs = [("unpruned", None, None)] + [
        (name, budget, build(name, budget, loaded.depth)) for name in names for budget in budgets
    ]
    results = harness.evaluate(
        loaded.model, lambda ids: loaded.tokenizer.decode(ids, skip_special_tokens=True), examples, configs
    )
    plot = Path(out_dir) / f"sweep_{task.replace(' ', '_')}_{time.time_ns()}.png"
    harness.plot(results, plot, f"{task}: {loaded.name}, {len(examples)} questions")
    points = [
        {"pruner": r.pruner, "budget": r.budget, "accuracy": r.accuracy, "speedup": r.speedup}
        for r in results
        if r.budget is not None
    ]
    return SweepResult(harness.markdown(results), plot, points)


# -------------------------------------------------------------------------------------------- app


class Demo:
    """The models the app runs, swapped by `load`; one request at a time uses them (hooks are per
    model instance, and timings from concurrent runs would be meaningless)."""

    def __init__(self, vlm: Loaded, lm: Loaded) -> None:
        self.vlm = vlm
        self.lm = lm
        self.lock = threading.Lock()

    def load(self, id_or_path: str) -> str:
        kind, loaded = load_checkpoint(id_or_path)
        with self.lock:
            setattr(self, kind, loaded)
        return f"Loaded {loaded.name} as the {'vision' if kind == 'vlm' else 'language'} model."

    def describe(self) -> str:
        return f"Vision model: **{self.vlm.name}** · language model: **{self.lm.name}**"

    def text_lm(self) -> Loaded | None:
        """The language model if it reads English (the toy LM only knows its retrieval vocabulary)."""
        return None if self.lm.reference else self.lm


def _message(error: Exception) -> str:
    if isinstance(error, (ValueError, TypeError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _safely(call, blank: tuple):
    """Run a tab function; a failure becomes a warning and a status line, never a trace in the page."""
    import gradio as gr

    try:
        return call()
    except Exception as error:
        log.exception("demo request failed")
        message = _message(error)
        gr.Warning(message)
        return (*blank, f"**Error:** {message}")


def build_app(demo: Demo, startup_message: str = ""):
    import gradio as gr
    import pandas as pd

    out_dir = Path(tempfile.mkdtemp(prefix="tokenprune-demo-"))
    with gr.Blocks(title="tokenprune demo", analytics_enabled=False) as app:
        gr.Markdown(
            "# tokenprune\nCut tokens before and during prefill, without retraining: "
            "every number below is measured on this machine."
        )
        with gr.Accordion("Models", open=False):
            models = gr.Markdown(demo.describe(), elem_id="models")
            with gr.Row():
                checkpoint = gr.Textbox(
                    label="checkpoint (local directory or hub id)", scale=4, elem_id="load-checkpoint"
                )
                load = gr.Button("Load", scale=1, elem_id="load-run")
            load_status = gr.Markdown(startup_message, elem_id="load-status")

        with gr.Tab("Vision", elem_id="tab-vision"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(label="image", type="pil", height=240, elem_id="vision-image")
                    with gr.Row():
                        seed = gr.Number(label="scene seed", value=1000, precision=0)
                        scene_button = gr.Button("Generate scene", elem_id="vision-scene")
                    question = gr.Textbox(label="question", elem_id="vision-question")
                    expected = gr.Markdown()
                with gr.Column():
                    pruners = gr.CheckboxGroup(
                        list(VISUAL_PRUNERS),
                        value=["divprune", "fastv"],
                        label="pruners",
                        elem_id="vision-pruners",
                    )
                    budget = gr.Slider(
                        0.05, 1.0, value=0.25, step=0.05, label="budget (fraction of image tokens kept)"
                    )
                    max_new = gr.Slider(1, 64, value=4, step=1, label="max new tokens")
                    run_button = gr.Button("Run", variant="primary", elem_id="vision-run")
            vision_status = gr.Markdown(elem_id="vision-status")
            vision_table = gr.Dataframe(label="unpruned vs pruned", elem_id="vision-table", wrap=True)
            vision_gallery = gr.Gallery(
                label="kept patches (dropped ones darkened)",
                columns=4,
                fit_columns=False,
                height="auto",
                object_fit="contain",
                elem_id="vision-overlays",
            )

            def new_scene(seed):
                picture, text, answer = generated_scene(seed)
                return picture, text, f"Reference answer: **{answer}**", seed + 1

            def on_vision(picture, text, names, fraction, tokens):
                def call():
                    with demo.lock:
                        result = run_vision(demo.vlm, as_image(picture), text, names, fraction, int(tokens))
                    done = f"Ran {len(result.rows)} configurations on **{demo.vlm.name}**." + (
                        TOY_TIMING if demo.vlm.reference else ""
                    )
                    return pd.DataFrame(result.rows), result.overlays, done

                return _safely(call, (None, None))

            scene_button.click(new_scene, seed, [image, question, expected, seed])
            run_button.click(
                on_vision,
                [image, question, pruners, budget, max_new],
                [vision_table, vision_gallery, vision_status],
                preprocess=False,  # the handler opens the image itself (as_image) and reports bad files
            )

        with gr.Tab("Long context", elem_id="tab-long"):
            with gr.Row():
                with gr.Column(scale=2):
                    prompt = gr.Textbox(label="prompt", lines=8, max_lines=12, elem_id="long-prompt")
                    with gr.Row():
                        task_seed = gr.Number(label="task seed", value=1000, precision=0)
                        length = gr.Slider(256, 2000, value=1024, step=64, label="prompt length (tokens)")
                        task_button = gr.Button("Generate retrieval task")
                    long_expected = gr.Markdown()
                with gr.Column(scale=1):
                    methods = gr.CheckboxGroup(
                        list(PROMPT_PRUNERS), value=list(PROMPT_PRUNERS), label="methods"
                    )
                    long_budget = gr.Slider(
                        0.05,
                        1.0,
                        value=0.1,
                        step=0.05,
                        label="budget (fraction of the prompt at the last stage)",
                    )
                    long_max_new = gr.Slider(1, 64, value=2, step=1, label="max new tokens")
                    # the bundled toy-lm finds the answer at layer 1; other models start at the
                    # harness default (40 % of the depth, the paper's Llama layer)
                    filter_layer = gr.Number(
                        label=f"GemFilter layer (0-{demo.lm.depth - 1})",
                        value=1 if demo.lm.reference else harness.gemfilter_layer(demo.lm.depth),
                        precision=0,
                    )
                    long_button = gr.Button("Run", variant="primary", elem_id="long-run")
            long_status = gr.Markdown(elem_id="long-status")
            long_table = gr.Dataframe(label="unpruned vs prefill skipping", wrap=True, elem_id="long-table")
            long_plot = gr.Plot(label="tokens per layer", elem_id="long-plot")

            def new_task(seed, tokens):
                text, answer = retrieval_task(seed, tokens)
                return text, f"Reference answer: **{answer}**", seed + 1

            def on_long(text, names, fraction, tokens, layer):
                def call():
                    with demo.lock:
                        result = run_long_context(
                            demo.lm, text, names, fraction, int(tokens), filter_layer=layer
                        )
                    done = f"Ran {len(result.rows)} configurations on **{demo.lm.name}**." + (
                        TOY_TIMING if demo.lm.reference else ""
                    )
                    return pd.DataFrame(result.rows), layer_figure(result.measurements), done

                return _safely(call, (None, None))

            task_button.click(new_task, [task_seed, length], [prompt, long_expected, task_seed])
            long_button.click(
                on_long,
                [prompt, methods, long_budget, long_max_new, filter_layer],
                [long_table, long_plot, long_status],
            )

        with gr.Tab("RAG / HTML", elem_id="tab-rag"):
            pages = bundled_pages()
            with gr.Row():
                with gr.Column(scale=2):
                    page = gr.Dropdown(list(pages), value=None, label="bundled page", elem_id="rag-page")
                    html = gr.Code(label="HTML", language="html", lines=10, max_lines=14, elem_id="rag-html")
                with gr.Column(scale=1):
                    rag_question = gr.Textbox(label="question", elem_id="rag-question")
                    rag_budget = gr.Slider(20, 2000, value=150, step=10, label="budget (tokens)")
                    scorer = gr.Radio(["bm25", "embedding", "hybrid"], value="bm25", label="scorer")
                    rag_button = gr.Button("Prune", variant="primary", elem_id="rag-run")
            rag_status = gr.Markdown(elem_id="rag-status")
            with gr.Row():
                counts = gr.Dataframe(label="tokens per stage", elem_id="rag-counts")
                answers = gr.Dataframe(
                    label="answer without and with pruning", wrap=True, elem_id="rag-answers"
                )
            blocks = gr.HighlightedText(
                label="cleaned page: kept and removed blocks",
                color_map={"kept": "green", "removed": "red"},
                show_legend=True,
                elem_id="rag-blocks",
            )
            pruned = gr.Markdown(label="pruned context", elem_id="rag-pruned")

            def pick_page(name):
                if not name:
                    return gr.update(), gr.update()
                text = pages[name].read_text(encoding="utf-8")
                return text, page_question(text)

            def on_rag(text, query, tokens, scorer_name):
                def call():
                    with demo.lock:
                        result = run_rag(text, query, tokens, scorer_name, demo.text_lm())
                    done = f"Kept {sum(label == 'kept' for _, label in result.blocks)} of {len(result.blocks)} blocks."
                    context = "### Pruned context\n\n" + result.pruned
                    return (
                        pd.DataFrame(result.counts),
                        pd.DataFrame(result.answers),
                        result.blocks,
                        context,
                        done,
                    )

                return _safely(call, (None, None, None, ""))

            page.change(pick_page, page, [html, rag_question])
            rag_button.click(
                on_rag,
                [html, rag_question, rag_budget, scorer],
                [counts, answers, blocks, pruned, rag_status],
            )

        with gr.Tab("Sweep", elem_id="tab-sweep"):
            with gr.Row():
                sweep_task = gr.Radio(["vision", "long context"], value="vision", label="task")
                sweep_pruners = gr.CheckboxGroup(
                    list(VISUAL_PRUNERS + PROMPT_PRUNERS), value=["divprune", "fastv"], label="pruners"
                )
                sweep_budgets = gr.Textbox(value="0.1,0.25,0.5", label="budgets (fractions kept)")
                sweep_questions = gr.Slider(
                    5, 200, value=20, step=5, label="questions", elem_id="sweep-questions"
                )
            sweep_button = gr.Button("Sweep", variant="primary", elem_id="sweep-run")
            sweep_status = gr.Markdown(elem_id="sweep-status")
            with gr.Row():
                sweep_plot = gr.Image(label="accuracy vs budget", type="filepath", elem_id="sweep-plot")
                speed_plot = gr.LinePlot(
                    x="budget", y="speedup", color="pruner", label="time to answer: speedup"
                )
            sweep_table = gr.Markdown(elem_id="sweep-table")

            def on_sweep(task, names, budgets, questions, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
                def call():
                    loaded = demo.vlm if task == "vision" else demo.lm
                    with demo.lock:
                        result = run_sweep(loaded, task, names, budgets, questions, out_dir)
                    done = f"Swept {len(result.points)} (pruner, budget) pairs on **{loaded.name}**."
                    return str(result.plot), pd.DataFrame(result.points), result.table, done

                return _safely(call, (None, None, ""))

            def pruners_for(task):
                choices = list(VISUAL_PRUNERS if task == "vision" else PROMPT_PRUNERS)
                return gr.update(choices=choices, value=choices[:2])

            sweep_task.change(pruners_for, sweep_task, sweep_pruners)
            sweep_button.click(
                on_sweep,
                [sweep_task, sweep_pruners, sweep_budgets, sweep_questions],
                [sweep_plot, speed_plot, sweep_table, sweep_status],
            )

        def load_model(name):
            try:
                message = demo.load(name)
            except Exception as error:
                log.exception("model load failed")
                gr.Warning(_message(error))
                return f"**Error:** {_message(error)}", demo.describe()
            return message, demo.describe()

        load.click(load_model, checkpoint, [load_status, models])
    return app


# -------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint (local directory or hub id): a VLM replaces toy-vlm, a causal LM replaces toy-lm",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SystemExit("the demo needs Gradio: pip install -e '.[demo]' (or run `make demo`)") from None
    if not 0 < args.port < 65536:
        raise SystemExit(f"--port must be in 1..65535, got {args.port}")
    demo = Demo(load_reference("toy-vlm"), load_reference("toy-lm"))
    startup = ""
    if args.model:
        try:
            startup = demo.load(args.model)
        except Exception as error:  # the app still starts, on the reference models, and says why
            startup = f"**Error:** {_message(error)} The app runs on the bundled reference models."
            print(f"warning: {_message(error)}")
    app = build_app(demo, startup)
    try:
        app.launch(
            server_name=args.host,
            server_port=args.port,
            prevent_thread_lock=True,
            quiet=True,
            show_error=True,  # an error outside the tab functions still shows its message
            css=CSS,
        )
    except OSError as error:
        raise SystemExit(f"cannot serve on {args.host}:{args.port}: {error}; pick another --port") from None
    print(
        f"tokenprune demo running at http://{args.host}:{args.port} ({demo.vlm.name}, {demo.lm.name})",
        flush=True,
    )
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenprune demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
