# Inferno developer commands. `make test` builds .venv on first use (and again whenever
# pyproject.toml changes), then runs the suite.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.PHONY: all install test lint fmt bench up demo clean

all: test

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# every benchmark in turn (about 4 minutes on 2 cores); each writes bench/out/<name>.json.
# Pick some and pass them arguments for a quick run, e.g.
#   make bench BENCHES="replay dispatch" replay_ARGS="--events 100000 --rounds 1" \
#       dispatch_ARGS=--only-sync-always
BENCHES ?= replay ic_latency dispatch

bench: install
	@set -e; $(foreach b,$(BENCHES),echo "== bench/$(b).py $($(b)_ARGS)"; \
		$(BIN)/python bench/$(b).py $($(b)_ARGS);)

# a local cluster in the foreground (Ctrl-C stops it); `inferno up --help` for the options
up: install
	$(BIN)/inferno up

# a throwaway cluster runs examples/arith.yaml, stops the worst pipeline, clones the best
demo: install
	$(BIN)/inferno demo

# removes everything the commands above create, the virtual environment included
clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache .hypothesis bench/out
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -prune \
		-exec rm -rf {} +
