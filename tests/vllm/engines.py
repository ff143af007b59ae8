"""Shared engine settings for the vLLM tests: tiny, eager, float32, small KV cache."""

from __future__ import annotations

import gc

import numpy as np
from PIL import Image

LLAVA = "TokenPruneLlavaForConditionalGeneration"
QWEN2_5_VL = "TokenPruneQwen2_5_VLForConditionalGeneration"


def overrides(architecture: str, method: str, budget) -> dict:
    return {"architectures": [architecture], "tokenprune": {"method": method, "budget": budget}}


def make_llm(model_dir, hf_overrides: dict | None = None, **kwargs):
    from vllm import LLM

    settings = dict(
        model=str(model_dir),
        dtype="float32",
        enforce_eager=True,
        max_model_len=256,
        max_num_seqs=4,
        limit_mm_per_prompt={"image": 2},
        seed=0,
        hf_overrides=hf_overrides,
    )
    settings.update(kwargs)
    return LLM(**settings)


def shutdown(llm) -> None:
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


def image(seed: int, size: tuple[int, int] = (56, 56)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
