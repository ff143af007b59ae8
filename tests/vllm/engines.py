"""Shared engine settings for the vLLM tests: tiny, eager, float32, small KV cache, and everything
in the test process (conftest sets VLLM_ENABLE_V1_MULTIPROCESSING=0; the "uni" executor runs the
worker in-process), which saves two vLLM start-ups per engine. One engine is alive at a time."""

from __future__ import annotations

import gc

import numpy as np
from PIL import Image

from tokenprune.zoo import scenes

LLAVA = "TokenPruneLlavaForConditionalGeneration"
QWEN2_5_VL = "TokenPruneQwen2_5_VLForConditionalGeneration"
QWEN2_VL = "TokenPruneQwen2VLForConditionalGeneration"


def overrides(architecture: str, method: str, budget) -> dict:
    return {"architectures": [architecture], "tokenprune": {"method": method, "budget": budget}}


def make_llm(model_dir, hf_overrides: dict | None = None, **kwargs):
    from vllm import LLM

    settings = dict(
        model=str(model_dir),
        runner="generate",
        dtype="float32",
        enforce_eager=True,
        max_model_len=256,
        max_num_seqs=4,
        limit_mm_per_prompt={"image": 2},
        seed=0,
        distributed_executor_backend="uni",
        gpu_memory_utilization=0.1,  # on CPU: the share of host memory vLLM may reserve
        hf_overrides=hf_overrides,
    )
    settings.update(kwargs)
    return LLM(**settings)


def shutdown(llm) -> None:
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    cleanup_dist_env_and_memory()


def greedy(max_tokens: int = 6):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=3, ignore_eos=True)


def assert_same_outputs(a, b) -> None:
    """Same generated tokens and the same top log-probabilities at every step."""
    import pytest

    assert a.outputs[0].token_ids == b.outputs[0].token_ids
    for got, want in zip(a.outputs[0].logprobs, b.outputs[0].logprobs):
        assert got.keys() == want.keys()
        for token in got:
            assert got[token].logprob == pytest.approx(want[token].logprob, abs=1e-4)


def assert_full_budget_matches_in_tree(model_dir, hf_overrides: dict, requests: list[dict]) -> None:
    """The pruned architecture with `hf_overrides` and vLLM's in-tree one (no overrides), one engine
    after the other on the same weights, give the same prompts and greedy outputs for `requests`."""
    results = {}
    for name, settings in (("pruned", hf_overrides), ("in_tree", None)):
        llm = make_llm(model_dir, settings)
        try:
            results[name] = llm.generate(requests, greedy())
        finally:
            shutdown(llm)
    for pruned, reference in zip(results["pruned"], results["in_tree"], strict=True):
        assert pruned.prompt_token_ids == reference.prompt_token_ids
        assert_same_outputs(pruned, reference)


def image(seed: int, size: tuple[int, int] = (56, 56)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


class Recorder:
    """Stands in for a model's pruner inside an in-process engine and records, per image, the
    attention it was given and the rows it kept."""

    def __init__(self, pruner) -> None:
        self.pruner = pruner
        self.needs = pruner.needs  # the engine asks the pruner it holds what to compute for it
        self.calls: list[dict] = []

    def select(self, tokens):
        selection = self.pruner.select(tokens)
        attention = tokens.attention.detach().cpu().clone() if tokens.attention is not None else None
        self.calls.append(
            {"grid": tokens.grid, "attention": attention, "kept": tuple(selection.indices.tolist())}
        )
        return selection


def record_selections(llm) -> list[dict]:
    """Wrap the engine's pruner (the engine runs in this process, see conftest) and return the list
    its selections are appended to."""
    import dataclasses

    def install(model):
        recorder = Recorder(model.tokenprune.pruner)
        model.tokenprune = dataclasses.replace(model.tokenprune, pruner=recorder)
        return recorder

    [recorder] = llm.apply_model(install)
    return recorder.calls


# prompts, images and answers of the reference model's scenes (tokenprune.zoo.scenes samples)
def prompt(sample) -> str:
    return f"<image> {sample.question}"


def picture(sample):
    return scenes.to_pil(scenes.render([sample.scene])[0])


def answer(token_ids, eos: int) -> list[int]:
    token_ids = list(token_ids)
    return token_ids[: token_ids.index(eos)] if eos in token_ids else token_ids
