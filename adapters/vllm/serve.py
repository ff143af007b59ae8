"""`tokenprune serve MODEL --method M --budget B [vLLM serve flags]`: vLLM's OpenAI-compatible server
with the pruned architecture for MODEL's `model_type` and the `tokenprune` entry built from the flags.
MODEL `toy-vlm` (not a directory of that name) serves the bundled reference model, exported for vLLM
into a temporary directory (`tokenprune zoo export`) and served under that name.

Every other flag goes to vLLM unchanged (`--port`, `--max-model-len`, `--tensor-parallel-size`, ...);
a `--hf-overrides` among them is merged with the plugin's entries. The entry is validated before
vLLM starts, so a bad method or budget fails in a second, with the same message the engine gives.
The server runs as `python -m tokenprune.adapters.vllm.api_server` would (see that module).
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from tokenprune.adapters.vllm import BY_MODEL_TYPE
from tokenprune.adapters.vllm.config import CONFIG_KEY, LLAVA_METHODS, METHODS, parse_entry

HF_OVERRIDES = ("--hf-overrides", "--hf_overrides")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.allow_abbrev = False  # a vLLM flag that is a prefix of one of these stays vLLM's
    parser.add_argument(
        "model",
        help="Hub id or local directory of a LLaVA-1.5, Qwen2-VL or Qwen2.5-VL model, or toy-vlm (bundled)",
    )
    parser.add_argument(
        "--method",
        required=True,
        help=f"one of {', '.join(METHODS)}; downsample and zerotprune too for LLaVA",
    )
    parser.add_argument(
        "--budget",
        required=True,
        type=_number,
        help="image tokens kept per image (an int), or a fraction in (0, 1] of each image's tokens",
    )
    parser.add_argument(
        "--options", type=json.loads, default=None, help="method options as JSON, e.g. '{\"seed\": 1}'"
    )
    parser.epilog = (
        "Other flags go to vLLM's server unchanged; they are listed by "
        "`python -m tokenprune.adapters.vllm.api_server --help=all` (or `vllm serve --help=all`)."
    )
    parser.set_defaults(extra_args=[])


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def vllm_arguments(model: str, entry: dict, extra: list[str], model_type: str) -> list[str]:
    """The `vllm serve` arguments: MODEL, the other flags in order, and the merged `--hf-overrides`."""
    if model_type not in BY_MODEL_TYPE:
        raise ValueError(
            f"tokenprune: {model} is a {model_type!r} model; the vLLM plugin prunes "
            f"{', '.join(BY_MODEL_TYPE)}"
        )
    overrides, rest, i = {}, [], 0
    while i < len(extra):
        flag, _, value = extra[i].partition("=")
        if flag in HF_OVERRIDES:
            if not value:
                if i + 1 == len(extra):
                    raise ValueError(f"tokenprune: {flag} needs a JSON value")
                i += 1
                value = extra[i]
            try:
                overrides.update(json.loads(value))
            except json.JSONDecodeError as error:
                raise ValueError(f"tokenprune: {flag} is not a JSON object: {error}") from None
        else:
            rest.append(extra[i])
        i += 1
    for key in ("architectures", CONFIG_KEY):
        if key in overrides:
            raise ValueError(
                f"tokenprune: '{key}' in --hf-overrides would replace what --method and --budget set; "
                "drop it, or start vLLM's server directly with your overrides"
            )
    overrides.update({"architectures": [BY_MODEL_TYPE[model_type]], CONFIG_KEY: entry})
    return [model, *rest, "--hf-overrides", json.dumps(overrides)]


def model_type(model: str) -> str:
    """The checkpoint's `model_type`, from its config.json (local directory or Hugging Face cache)."""
    from transformers import PretrainedConfig

    config, _ = PretrainedConfig.get_config_dict(model)
    return config.get("model_type", "")


def run(args: argparse.Namespace) -> int:
    from tokenprune.zoo.export import EXPORTABLE, export_vllm

    entry = {"method": args.method, "budget": args.budget}
    if args.options is not None:
        entry["options"] = args.options
    with ExitStack() as stack:
        model, extra = args.model, args.extra_args
        try:
            parse_entry(entry, model, LLAVA_METHODS)  # the engine checks the family's list
            if model in EXPORTABLE and not Path(model).exists():
                directory = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"tokenprune-{model}-"))
                if not any(flag.partition("=")[0] == "--served-model-name" for flag in extra):
                    extra = [*extra, "--served-model-name", model]
                model = str(export_vllm(model, directory))
            argv = vllm_arguments(model, entry, extra, model_type(model))
        except (OSError, TypeError, ValueError) as error:
            print(error, file=sys.stderr)
            return 2
        sys.argv = [sys.argv[0], *argv]
        # run as the main module, as `python -m` does: vLLM's spawned processes import it first (see there)
        runpy.run_module("tokenprune.adapters.vllm.api_server", run_name="__main__", alter_sys=True)
    return 0
