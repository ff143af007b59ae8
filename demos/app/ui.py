"""The Gradio Blocks page: a models panel and one tab per task, each failure a message in the page."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from tokenprune import registry
from tokenprune.demos.app import long_context, rag, vision
from tokenprune.demos.app.checks import PROMPT_PRUNERS, VISUAL_PRUNERS, check_count
from tokenprune.demos.app.long_context import layer_figure, retrieval_task, run_long_context
from tokenprune.demos.app.models import Demo
from tokenprune.demos.app.rag import bundled_pages, page_question, run_rag
from tokenprune.demos.app.sweep import run_sweep
from tokenprune.demos.app.vision import as_image, generated_scene, run_vision

MAX_NEW_TOKENS = 64
MAX_QUESTIONS = 200
MIN_LENGTH, MAX_LENGTH = 256, 2000  # generated retrieval prompts, in tokens
MAX_SEED = 2**31 - 1
CSS = "#vision-image img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }"
TOY_TIMING = (
    " The reference models are tiny (a few layers, 96-wide): fixed per-forward costs weigh heavily, so"
    " prefill speedups are smaller and noisier than on a real checkpoint (`--model`)."
)
SPREAD = (
    " Speedups are median unpruned / median pruned time, with the smallest and largest ratio of a single"
    " round in brackets."
)
VISION_NOTE = (
    "**prefill ms**: one forward over the prompt (the step pruning shortens), median of 5 interleaved"
    " runs after a warm-up. **total ms**: the whole `generate()`, median of 3: the prefill with the"
    " pruner's selection, then one decoding step per new token. Decoding a few tokens costs about the"
    " same pruned or not (and the hooks add a small fixed cost per step), so on a small model a pruned"
    " total can exceed the unpruned one while its prefill is faster." + SPREAD
)
# Closes every toast when a run starts: a warning from an earlier run (or another tab) is not this run's.
CLEAR_TOASTS = "() => { document.querySelectorAll('.toast-close').forEach((button) => button.click()); }"
log = logging.getLogger("tokenprune.demo")


def error_message(error: Exception) -> str:
    if isinstance(error, (ValueError, TypeError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _safely(call, blank: tuple):
    """Run a tab function; a failure becomes a warning and a status line, never a trace in the page.
    Bad input (ValueError, TypeError: the tab functions' messages) logs one line; anything else logs
    its traceback, as a bug."""
    import gradio as gr

    try:
        return call()
    except Exception as error:
        message = error_message(error)
        if isinstance(error, (ValueError, TypeError)):
            log.warning("bad input: %s", message)
        else:
            log.exception("demo request failed")
        gr.Warning(message)
        return (*blank, f"**Error:** {message}")


def _empty(columns: tuple[str, ...]):
    """A table with its real headers and no rows (Gradio shows "1 2 3" for a table without headers)."""
    import pandas as pd

    return pd.DataFrame(columns=list(columns))


def build_app(demo: Demo, startup_message: str = ""):
    """The page, not launched: the models panel and the Vision, Long context, RAG / HTML and Sweep tabs."""
    import gradio as gr

    with gr.Blocks(title="tokenprune demo", analytics_enabled=False) as app:
        gr.Markdown(
            "# tokenprune\nCut tokens before and during prefill, without retraining: "
            "every number below is measured on this machine."
        )
        models_panel(demo, startup_message)
        vision_tab(demo)
        long_context_tab(demo)
        rag_tab(demo)
        sweep_tab(demo, Path(tempfile.mkdtemp(prefix="tokenprune-demo-")))
    return app


def models_panel(demo: Demo, startup_message: str) -> None:
    """What the app runs, and a field to load another checkpoint."""
    import gradio as gr

    with gr.Accordion("Models", open=False):
        models = gr.Markdown(demo.describe(), elem_id="models")
        with gr.Row():
            checkpoint = gr.Textbox(
                label="checkpoint (local directory or hub id)", scale=4, elem_id="load-checkpoint"
            )
            load = gr.Button("Load", scale=1, elem_id="load-run")
        load_status = gr.Markdown(startup_message, elem_id="load-status")

    def load_model(name):
        try:
            message = demo.load(name)
        except Exception as error:  # load_checkpoint wraps every loading failure in a ValueError
            log.warning("model load failed: %s", error_message(error))
            gr.Warning(error_message(error))
            return f"**Error:** {error_message(error)}", demo.describe()
        return message, demo.describe()

    load.click(load_model, checkpoint, [load_status, models])


def vision_tab(demo: Demo) -> None:
    """An image and a question; the unpruned model and each pruner side by side, kept patches drawn."""
    import gradio as gr
    import pandas as pd

    with gr.Tab("Vision", elem_id="tab-vision"):
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="image", type="pil", height=240, elem_id="vision-image")
                with gr.Row():
                    seed = gr.Number(label="scene seed", value=1000, precision=0, elem_id="vision-seed")
                    scene_button = gr.Button("Generate scene", elem_id="vision-scene")
                shown_seed = gr.State(None)  # the seed of the scene on display
                question = gr.Textbox(label="question", elem_id="vision-question")
                expected = gr.Markdown()
            with gr.Column():
                pruners = gr.CheckboxGroup(
                    list(VISUAL_PRUNERS),
                    value=["divprune", "fastv"],
                    label="pruners",
                    elem_id="vision-pruners",
                )
                # numbers, not sliders: a slider clamps what is typed, a number out of range is a message
                budget = gr.Number(
                    value=0.25,
                    step=0.05,
                    label="budget (fraction of image tokens kept, in (0, 1])",
                    elem_id="vision-budget",
                )
                max_new = gr.Number(value=4, precision=0, label=f"max new tokens (1-{MAX_NEW_TOKENS})")
                run_button = gr.Button("Run", variant="primary", elem_id="vision-run")
        vision_status = gr.Markdown(elem_id="vision-status")
        vision_table = gr.Dataframe(
            _empty(vision.COLUMNS), label="unpruned vs pruned", elem_id="vision-table", wrap=True
        )
        gr.Markdown(VISION_NOTE, elem_id="vision-note")
        vision_gallery = gr.Gallery(
            label="kept patches (dropped ones darkened)",
            columns=4,
            fit_columns=False,
            height="auto",
            object_fit="contain",
            elem_id="vision-overlays",
        )

        def new_scene(value, shown):
            def call():
                # the next scene once the one typed is on display; the box always names the one shown
                number = check_count(value, "The scene seed", 0, MAX_SEED)
                number = number + 1 if number == shown else number
                picture, text, answer = generated_scene(number)
                return picture, text, f"Reference answer: **{answer}**", number, number, ""

            return _safely(call, (gr.update(), gr.update(), gr.update(), gr.update(), shown))

        def on_vision(picture, text, names, fraction, tokens):
            def call():
                new_tokens = check_count(tokens, "Max new tokens", 1, MAX_NEW_TOKENS)
                with demo.lock:
                    result = run_vision(demo.vlm, as_image(picture), text, names, fraction, new_tokens)
                done = f"Ran {len(result.rows)} configurations on **{demo.vlm.name}**." + (
                    TOY_TIMING if demo.vlm.reference else ""
                )
                return pd.DataFrame(result.rows), result.overlays, done

            return _safely(call, (_empty(vision.COLUMNS), None))

        scene_button.click(
            new_scene, [seed, shown_seed], [image, question, expected, seed, shown_seed, vision_status]
        )
        run_button.click(None, js=CLEAR_TOASTS)
        run_button.click(
            on_vision,
            [image, question, pruners, budget, max_new],
            [vision_table, vision_gallery, vision_status],
            preprocess=False,  # the handler opens the image itself (as_image) and reports bad files
        )


def long_context_tab(demo: Demo) -> None:
    """A long prompt; LazySkip / GemFilter against the unpruned prefill, tokens at every layer."""
    import gradio as gr
    import pandas as pd

    with gr.Tab("Long context", elem_id="tab-long"):
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(label="prompt", lines=8, max_lines=12, elem_id="long-prompt")
                with gr.Row():
                    task_seed = gr.Number(label="task seed", value=1000, precision=0, elem_id="long-seed")
                    length = gr.Number(
                        value=1024, precision=0, label=f"prompt length ({MIN_LENGTH}-{MAX_LENGTH} tokens)"
                    )
                    task_button = gr.Button("Generate retrieval task")
                shown_task = gr.State(None)  # the seed of the task on display
                long_expected = gr.Markdown()
            with gr.Column(scale=1):
                methods = gr.CheckboxGroup(list(PROMPT_PRUNERS), value=list(PROMPT_PRUNERS), label="methods")
                long_budget = gr.Number(
                    value=0.1, step=0.05, label="budget (fraction of the prompt at the last stage, in (0, 1])"
                )
                long_max_new = gr.Number(value=2, precision=0, label=f"max new tokens (1-{MAX_NEW_TOKENS})")
                # the bundled toy-lm finds the answer at layer 1; other models start at the
                # registry default (40 % of the depth, the paper's Llama layer)
                filter_layer = gr.Number(
                    label=f"GemFilter layer (0-{demo.lm.depth - 1})",
                    value=1 if demo.lm.reference else registry.gemfilter_layer(demo.lm.depth),
                    precision=0,
                )
                long_button = gr.Button("Run", variant="primary", elem_id="long-run")
        long_status = gr.Markdown(elem_id="long-status")
        long_table = gr.Dataframe(
            _empty(long_context.COLUMNS),
            label="unpruned vs prefill skipping",
            wrap=True,
            elem_id="long-table",
        )
        long_plot = gr.Plot(label="tokens per layer", elem_id="long-plot")

        def new_task(value, tokens, shown):
            def call():
                number = check_count(value, "The task seed", 0, MAX_SEED)
                prompt_tokens = check_count(tokens, "The prompt length", MIN_LENGTH, MAX_LENGTH)
                number = number + 1 if number == shown else number
                text, answer = retrieval_task(number, prompt_tokens)
                return text, f"Reference answer: **{answer}**", number, number, ""

            return _safely(call, (gr.update(), gr.update(), gr.update(), shown))

        def on_long(text, names, fraction, tokens, layer):
            def call():
                new_tokens = check_count(tokens, "Max new tokens", 1, MAX_NEW_TOKENS)
                with demo.lock:
                    result = run_long_context(demo.lm, text, names, fraction, new_tokens, filter_layer=layer)
                done = (
                    f"Ran {len(result.rows)} configurations on **{demo.lm.name}**."
                    + SPREAD
                    + (TOY_TIMING if demo.lm.reference else "")
                )
                return pd.DataFrame(result.rows), layer_figure(result.measurements), done

            return _safely(call, (_empty(long_context.COLUMNS), None))

        task_button.click(
            new_task,
            [task_seed, length, shown_task],
            [prompt, long_expected, task_seed, shown_task, long_status],
        )
        long_button.click(None, js=CLEAR_TOASTS)
        long_button.click(
            on_long,
            [prompt, methods, long_budget, long_max_new, filter_layer],
            [long_table, long_plot, long_status],
        )


def rag_tab(demo: Demo) -> None:
    """A web page and a question; tokens per stage, kept and removed blocks, answers."""
    import gradio as gr
    import pandas as pd

    with gr.Tab("RAG / HTML", elem_id="tab-rag"):
        pages = bundled_pages()
        with gr.Row():
            with gr.Column(scale=2):
                page = gr.Dropdown(list(pages), value=None, label="bundled page", elem_id="rag-page")
                html = gr.Code(label="HTML", language="html", lines=10, max_lines=14, elem_id="rag-html")
            with gr.Column(scale=1):
                rag_question = gr.Textbox(label="question", elem_id="rag-question")
                rag_budget = gr.Number(
                    value=150, precision=0, label="budget (tokens, >= 1)", elem_id="rag-budget"
                )
                scorer = gr.Radio(["bm25", "embedding", "hybrid"], value="bm25", label="scorer")
                rag_button = gr.Button("Prune", variant="primary", elem_id="rag-run")
        rag_status = gr.Markdown(elem_id="rag-status")
        counts = gr.Dataframe(_empty(rag.COUNT_COLUMNS), label="tokens per stage", elem_id="rag-counts")
        # full width, the answer column widest: answers are whole sentences
        answers = gr.Dataframe(
            _empty(rag.ANSWER_COLUMNS),
            label="answer without and with pruning",
            wrap=True,
            column_widths=["16%", "60%", "24%"],
            elem_id="rag-answers",
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
                done = (
                    f"Kept {sum(label == 'kept' for _, label in result.blocks)} of {len(result.blocks)} blocks;"
                    f" counts are {result.unit}."
                )
                context = "### Pruned context\n\n" + result.pruned
                return (
                    pd.DataFrame(result.counts),
                    pd.DataFrame(result.answers),
                    result.blocks,
                    context,
                    done,
                )

            return _safely(call, (_empty(rag.COUNT_COLUMNS), _empty(rag.ANSWER_COLUMNS), None, ""))

        page.change(pick_page, page, [html, rag_question])
        rag_button.click(None, js=CLEAR_TOASTS)
        rag_button.click(
            on_rag,
            [html, rag_question, rag_budget, scorer],
            [counts, answers, blocks, pruned, rag_status],
        )


def sweep_tab(demo: Demo, out_dir: Path) -> None:
    """Accuracy and time to answer vs budget on held-out toy questions; plots go to `out_dir`."""
    import gradio as gr

    with gr.Tab("Sweep", elem_id="tab-sweep"):
        with gr.Row():
            sweep_task = gr.Radio(["vision", "long context"], value="vision", label="task")
            sweep_pruners = gr.CheckboxGroup(
                list(VISUAL_PRUNERS + PROMPT_PRUNERS), value=["divprune", "fastv"], label="pruners"
            )
            sweep_budgets = gr.Textbox(value="0.1,0.25,0.5", label="budgets (fractions kept)")
            sweep_questions = gr.Number(
                value=20, precision=0, label=f"questions (1-{MAX_QUESTIONS})", elem_id="sweep-questions"
            )
        sweep_button = gr.Button("Sweep", variant="primary", elem_id="sweep-run")
        sweep_status = gr.Markdown(elem_id="sweep-status")
        # one full-width figure (accuracy and speedup side by side), drawn at the size it is shown
        sweep_plot = gr.Image(
            label="accuracy and speedup vs budget", type="filepath", show_label=True, elem_id="sweep-plot"
        )
        sweep_table = gr.Markdown(elem_id="sweep-table")

        def on_sweep(task, names, budgets, questions, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
            def call():
                count = check_count(questions, "The number of questions", 1, MAX_QUESTIONS)
                loaded = demo.vlm if task == "vision" else demo.lm
                with demo.lock:
                    result = run_sweep(loaded, task, names, budgets, count, out_dir)
                done = (
                    f"Swept {len(result.points)} (pruner, budget) pairs on **{loaded.name}**. Speedup: the"
                    " unpruned time to answer / the pruned one, summed over the questions, each answered by"
                    " every configuration in turn; bars and brackets: the slowest and fastest single question."
                ) + (TOY_TIMING if loaded.reference else "")
                return str(result.plot), result.table, done

            return _safely(call, (None, ""))

        def pruners_for(task):
            choices = list(VISUAL_PRUNERS if task == "vision" else PROMPT_PRUNERS)
            return gr.update(choices=choices, value=choices[:2])

        sweep_task.change(pruners_for, sweep_task, sweep_pruners)
        sweep_button.click(None, js=CLEAR_TOASTS)
        sweep_button.click(
            on_sweep,
            [sweep_task, sweep_pruners, sweep_budgets, sweep_questions],
            [sweep_plot, sweep_table, sweep_status],
        )
