# Everything a fresh machine needs, from the project's own files.
# `make speedrun` runs the main job, `make test` runs the test suite; each installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install speedrun test test-slow bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel of torch; a plain `torch` would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

speedrun: $(STAMP)
	$(BIN)/groklm speedrun --out runs/speedrun --force

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs

bench: $(STAMP)
	$(BIN)/python benchmarks/tokenizer.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/shakespeare_char.py
