"""vLLM plugin tests. They run only in `.venv-vllm` (.ci/test-vllm.sh); the main suite, in an
environment without vLLM, skips this directory at collection."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

# This directory itself is importable as a namespace package named "vllm" once pytest puts tests/
# on sys.path; only a real package (with an origin) counts.
_spec = importlib.util.find_spec("vllm")
if _spec is None or _spec.origin is None:
    collect_ignore_glob = ["*"]
else:
    from tokenprune.adapters.vllm.torchvision_ops import define_missing_ops

    define_missing_ops()  # before vLLM imports torchvision: the CPU build's torchvision ops do not load
    sys.path.insert(0, str(Path(__file__).parent))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    @pytest.fixture(scope="session")
    def llava_dir(tmp_path_factory):
        from checkpoints import llava_checkpoint

        return llava_checkpoint(tmp_path_factory.mktemp("llava"))

    @pytest.fixture(scope="session")
    def qwen_dir(tmp_path_factory):
        from checkpoints import qwen2_5_vl_checkpoint

        return qwen2_5_vl_checkpoint(tmp_path_factory.mktemp("qwen2_5_vl"))

    @pytest.fixture(scope="session")
    def qwen2_vl_dir(tmp_path_factory):
        from checkpoints import qwen2_vl_checkpoint

        return qwen2_vl_checkpoint(tmp_path_factory.mktemp("qwen2_vl"))
