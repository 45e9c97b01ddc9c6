# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv, installs what
# it needs (a CPU build of torch unless an NVIDIA driver is present), then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# The CPU wheel index keeps a laptop or CI install small; with an NVIDIA driver, take PyPI's
# default (CUDA) build instead.
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
else
TORCH_INDEX ?=
endif
PIP := $(BIN)/python -m pip
PYTEST_WORKERS ?= 2

.PHONY: demo test test-quick notebooks lint typecheck bench bench-peer setup clean

demo: $(VENV)/.installed-base
	$(BIN)/python -m deep.demo

# Jupyter Lab on notebooks/, in the venv that `make demo` makes (01 first; see README).
notebooks: $(VENV)/.installed-base
	$(BIN)/jupyter lab notebooks/

test: $(VENV)/.installed-dev
	$(BIN)/ruff check theory deep tests notebooks
	$(BIN)/ruff format --check theory deep tests
	$(BIN)/mypy theory deep
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -n $(PYTEST_WORKERS) -p no:cacheprovider

# The same tests without those marked slow (notebooks that train, Ray, kill-and-resume).
test-quick: $(VENV)/.installed-dev
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -n $(PYTEST_WORKERS) -p no:cacheprovider -m "not slow"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix theory deep tests notebooks
	$(BIN)/ruff format theory deep tests

bench: $(VENV)/.installed-base
	$(BIN)/python -m theory.bench
	$(BIN)/python -m deep.bench

# The same CQL update in d3rlpy, timed in the same process (d3rlpy without its gymnasium pin).
bench-peer: $(VENV)/.installed-base
	$(PIP) install -e ".[bench]"
	$(PIP) install --no-deps "d3rlpy==2.8.1"
	$(BIN)/python -m deep.bench --peer d3rlpy --threads 1 --clock cpu

setup: $(VENV)/.installed-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || \
	  $(PIP) install --retries 1 "torch==$(TORCH_VERSION)" \
	    $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	touch $@

$(VENV)/.installed-base: pyproject.toml $(VENV)/.torch
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[dev]"
	touch $@ $(VENV)/.installed-base

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .hypothesis runs
