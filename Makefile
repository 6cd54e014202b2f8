# Two commands do all set-up on a fresh machine:
#   make reproduce   venv + pinned install + the offline demo workflow (config/config.yaml)
#   make test        venv + pinned install + lint + the test suite (CPU; GPU tests skip)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK ?= requirements/lock-cpu.txt
CORES ?= all
STAMP := $(VENV)/.installed
# snakefmt lives in its own venv: the demo corpus reads the installed dependency closure of
# testtime[dev,bench,slurm], so a new dev dependency would change the demo's documents and numbers.
LINT_VENV ?= .venv-lint
LINT_LOCK ?= requirements/lock-lint.txt
LINT_STAMP := $(LINT_VENV)/.installed

.PHONY: install reproduce test lint format bench lock clean-demo

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet -c $(LOCK) torch
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[dev,bench,slurm]"
	touch $(STAMP)

$(LINT_STAMP): $(LINT_LOCK)
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet -r $(LINT_LOCK)
	touch $(LINT_STAMP)

install: $(STAMP)

# run-workflow.sh = `snakemake --cores all` that also recovers from a SIGKILLed earlier run;
# dvc-adopt.sh then records the outputs in dvc.lock, so `dvc status`/`dvc repro` find nothing
# to do (a no-op with a note outside a git repository; docs/dvc.md).
reproduce: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" scripts/run-workflow.sh --cores $(CORES)
	PATH="$(abspath $(BIN)):$$PATH" scripts/dvc-adopt.sh

test: $(STAMP) $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(LINT_VENV)/bin/snakefmt --check workflow
	$(BIN)/python -m pytest

lint: $(STAMP) $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(LINT_VENV)/bin/snakefmt --check workflow

format: $(STAMP) $(LINT_STAMP)
	$(BIN)/ruff format .
	$(LINT_VENV)/bin/snakefmt workflow
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/selection.py
	$(BIN)/python bench/finetune.py

# Re-pin every dependency after editing pyproject.toml (CPU torch kept at the local build).
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch==' \
	  | sed '1i torch==2.13.0' > $(LOCK)
