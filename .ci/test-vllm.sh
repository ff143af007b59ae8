#!/usr/bin/env bash
# Run the vLLM plugin tests (tests/vllm) in .venv-vllm, created by .ci/setup-vllm-venv.sh.
# Arguments go to pytest; without a path among them (tests/...), it runs all of tests/vllm.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "no $VENV: run .ci/setup-vllm-venv.sh first" >&2
    exit 2
fi
cd "$ROOT"
export HF_HUB_OFFLINE=1
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
args=("$@")
case " $* " in
    *" tests/"*) ;;
    *) args+=(tests/vllm) ;;
esac
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "${args[@]}"
