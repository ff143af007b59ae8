"""tokenprune demo: a Gradio app comparing pruned and unpruned inference on real models.

    tokenprune demo [--model ID_OR_PATH] [--port 7860] [--host 127.0.0.1]
    make demo                                   # the bundled reference models, no downloads

Tabs: Vision (visual-token pruners side by side, kept patches drawn on the image), Long context
(LazySkip / GemFilter: time to first token and tokens per layer), RAG / HTML (clean and prune a page,
kept and removed blocks), Sweep (accuracy and time to answer vs budget through `tokenprune.eval`).

Without `--model` the app runs the committed toy-vlm and toy-lm (`tokenprune.zoo`). A vision-language
checkpoint replaces toy-vlm, a causal LM replaces toy-lm.

Modules: `models` (the reference models or a checkpoint), `measurement` (prefill and generation times
from the shared interleaved loop, `tokenprune.timing`), one per tab (`vision`, `long_context`, `rag`, `sweep`: plain
Python that raises ValueError with a message for bad input), and `ui`, the Gradio page, which shows
every failure as a message. This module is the `tokenprune demo` command.
"""

from __future__ import annotations

import argparse

DEFAULT_PORT = 7860


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
    from tokenprune.demos.app.models import Demo, load_reference
    from tokenprune.demos.app.ui import CSS, build_app, error_message

    demo = Demo(load_reference("toy-vlm"), load_reference("toy-lm"))
    startup = ""
    if args.model:
        try:
            startup = demo.load(args.model)
        except Exception as error:  # the app still starts, on the reference models, and says why
            startup = f"**Error:** {error_message(error)} The app runs on the bundled reference models."
            print(f"warning: {error_message(error)}")
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
