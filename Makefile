# The README's two commands: `make demo` and `make test`. Each creates .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned, so pip never pulls a multi-GB CUDA build; override e.g. TORCH_SPEC='torch==2.5.1'
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint format bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/diffing demo --out demo-report

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check diffing tests benchmarks experiments examples
	$(BIN)/ruff format --check diffing tests benchmarks experiments examples

format: install
	$(BIN)/ruff format diffing tests benchmarks experiments examples
	$(BIN)/ruff check --fix diffing tests benchmarks experiments examples

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) demo-report .pytest_cache
