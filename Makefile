# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup lint bench clean

$(BIN)/eat: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"  # CPU build; a bare torch requirement may pull a multi-GB CUDA build
	$(BIN)/pip install -q -e ".[all,dev]"
	@touch $(BIN)/eat

setup: $(BIN)/eat

# Main job on the embedded default (no GPU, no downloads): the serving system end to end - a host and
# 8 simulated workers on loopback serve real prompts with the shipped EAT policy, then a baseline.
demo: setup
	$(BIN)/eat demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/eat bench env

clean:
	rm -rf $(VENV) runs .numba_cache .pytest_cache
