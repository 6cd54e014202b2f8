# Two commands do all set-up on a fresh machine:
#   make reproduce   venv + pinned install + the offline demo workflow (config/config.yaml)
#   make test        venv + pinned install + lint + the test suite (CPU; GPU tests skip)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK ?= requirements/lock-cpu.txt
CORES ?= all
STAMP := $(VENV)/.installed
# The demo corpus's own sources (docs/corpus.md): pinned files, kept apart from the venv, so
# testtime's dependencies do not move the demo's documents.
CORPUS_DIR ?= .corpus
CORPUS_LOCK := requirements/corpus.txt
CORPUS_BUILD := requirements/corpus-build.txt
CORPUS_STAMP := $(CORPUS_DIR)/manifest.json

.PHONY: install reproduce test lint format bench lock clean-demo

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet -c $(LOCK) torch
	# the library and CLI, the workflow engines (Snakemake, DVC, Slurm plugin), tests and lint
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[dev,bench,workflow]"
	touch $(STAMP)

# Only the .dist-info folders and licence files of the pinned files are kept (15 MB).
$(CORPUS_STAMP): $(CORPUS_LOCK) $(CORPUS_BUILD) src/testtime/corpus/pinned.py | $(STAMP)
	$(BIN)/python -m testtime.corpus install $(CORPUS_LOCK) $(CORPUS_DIR) \
	  --build-constraints $(CORPUS_BUILD)

install: $(STAMP) $(CORPUS_STAMP)

# run-workflow.sh = `snakemake --cores all` that also recovers from a SIGKILLed earlier run;
# dvc-adopt.sh then records the outputs in dvc.lock, so `dvc status`/`dvc repro` find nothing
# to do (a no-op with a note outside a git repository; docs/dvc.md).
reproduce: $(STAMP) $(CORPUS_STAMP)
	PATH="$(abspath $(BIN)):$$PATH" scripts/run-workflow.sh --cores $(CORES)
	PATH="$(abspath $(BIN)):$$PATH" scripts/dvc-adopt.sh

test: $(STAMP) $(CORPUS_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check workflow
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check workflow

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/snakefmt workflow
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/testtime bench selection
	$(BIN)/testtime bench finetune
	$(BIN)/testtime bench lora

# Re-pin every dependency after editing pyproject.toml (CPU torch kept at the local build).
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch==' \
	  | sed '1i torch==2.13.0' > $(LOCK)
