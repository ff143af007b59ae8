"""Run the pruned LLaVA and Qwen2.5-VL with VisionZip at tensor_parallel_size 1 and 2 and write, per
engine, what each rank selected (the vision attention each rank computed and the rows it kept) and
the greedy outputs, as JSON: `python tests/vllm/tensor_parallel.py LLAVA_DIR QWEN_DIR OUT.json`.

A script, not a test module: vLLM on CPU starts tensor-parallel workers with multiprocessing's spawn
method, whose child processes import the parent's main module first. As the main module, this file
repairs torchvision (adapters/vllm/torchvision_ops.py) in every worker before vLLM is imported; under
pytest the main module is pytest's own. test_tensor_parallel.py runs it and compares the engines.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tokenprune.adapters.vllm.torchvision_ops import define_missing_ops

define_missing_ops()
sys.path.insert(0, str(Path(__file__).parent))

BUDGET = 4
ENGINES = {
    # family: (architecture, prompts with one image each, image size)
    "llava": ("TokenPruneLlavaForConditionalGeneration", "user: w1 w2 <image> w3 assistant:", (56, 56)),
    "qwen2_5_vl": (
        "TokenPruneQwen2_5_VLForConditionalGeneration",
        "user: w1 <|vision_start|><|image_pad|><|vision_end|> w2 w3 assistant:",
        (112, 84),  # not square: Qwen2.5-VL's window order differs from the raster order
    ),
}


def install(model):
    """Swap the engine's pruner for a recorder (on each rank)."""
    import dataclasses

    from engines import Recorder

    model.tokenprune = dataclasses.replace(model.tokenprune, pruner=Recorder(model.tokenprune.pruner))


def recorded(model) -> list[dict]:
    return [
        {"grid": list(call["grid"]), "kept": list(call["kept"]), "attention": call["attention"].tolist()}
        for call in model.tokenprune.pruner.calls
    ]


def run(model_dir: str, family: str, tensor_parallel_size: int) -> dict:
    from engines import greedy, image, make_llm, overrides, shutdown

    architecture, prompt, size = ENGINES[family]
    llm = make_llm(
        model_dir,
        overrides(architecture, "visionzip", BUDGET),
        tensor_parallel_size=tensor_parallel_size,
        distributed_executor_backend="mp" if tensor_parallel_size > 1 else "uni",
    )
    try:
        llm.apply_model(install)
        outputs = llm.generate(
            [{"prompt": prompt, "multi_modal_data": {"image": image(seed, size)}} for seed in range(3)],
            greedy(),
        )
        ranks = llm.apply_model(recorded)
    finally:
        shutdown(llm)
    return {
        "ranks": ranks,
        "outputs": [
            {
                "prompt_token_ids": list(o.prompt_token_ids),
                "token_ids": list(o.outputs[0].token_ids),
                "logprobs": [{str(t): p.logprob for t, p in step.items()} for step in o.outputs[0].logprobs],
            }
            for o in outputs
        ],
    }


def main(llava_dir: str, qwen_dir: str, out: str) -> None:
    import json

    # two ranks on a shared machine: no pinning of each rank's OpenMP threads to its own NUMA node
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    results = {
        f"{family}/tp{size}": run(model_dir, family, size)
        for family, model_dir in (("llava", llava_dir), ("qwen2_5_vl", qwen_dir))
        for size in (1, 2)
    }
    Path(out).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
