# Inferno developer commands. They build .venv on first use (and again whenever pyproject.toml
# changes): `make demo` and `make up` install the package alone, which is all they run; `make test`
# and the other commands install the dev extra too, with the hf backend's torch and transformers.
#
# Packages are installed with uv when it is on PATH or can be put into the venv (several times
# faster than pip: docs/benchmarks.md), else with pip; `make INSTALLER=pip ...` uses pip alone.
# torch is always installed by pip, first: pip's config can point at a CPU build on disk, which
# uv does not read, and uv then keeps the torch it finds installed.

PYTHON ?= python3
VENV ?= .venv
INSTALLER ?= uv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
BASE_STAMP := $(VENV)/.install-base
DEV_STAMP := $(VENV)/.install-dev
TORCH := $(shell sed -n 's/.*"\(torch==[^"]*\)".*/\1/p' pyproject.toml)

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

# `$(INSTALL) ARGS` is `pip install ARGS` into the venv, run by uv or by pip (see above)
INSTALL = $(SHELL) -c 'uv=; \
	if [ "$(INSTALLER)" = uv ]; then \
		uv=$$(command -v uv) || { uv=$(BIN)/uv; [ -x $$uv ] || $(PIP) install -q uv || uv=; }; \
	fi; \
	if [ -n "$$uv" ]; then set -- $$uv pip install --python $(BIN)/python "$$@"; \
	else set -- $(PIP) install "$$@"; fi; \
	echo "$$*"; exec "$$@"' install

.PHONY: all install chromium test lint fmt bench up demo clean

all: test

install: $(DEV_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BASE_STAMP): pyproject.toml | $(BIN)/python
	@$(INSTALL) -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install '$(TORCH)'
	@$(INSTALL) -e '.[dev]'
	@$(MAKE) --no-print-directory chromium
	touch $@ $(BASE_STAMP)

# The dashboard's browser test (tests/e2e/test_dashboard.py) drives Debian's chromium through
# its chromedriver. As root it is installed here; otherwise this says how, and the test fails
# naming the same command (it is never skipped).
chromium:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver; \
	else echo "the dashboard test needs chromium: sudo apt-get install -y chromium chromium-driver"; fi

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# every benchmark in turn (about 20 minutes on 2 cores: 3.5 of them cold_start's 10M-event log,
# 1.5 hf_overhead's, ~4 datasets' 1M-row uploads, ~5 openai_limits' fleet runs); each writes
# bench/out/<name>.json. vllm_overhead needs a GPU, fleet takes ~10 minutes: name them.
# Pick some and pass them arguments for a quick run, e.g.
#   make bench BENCHES="replay dispatch" replay_ARGS="--events 100000 --rounds 1" \
#       dispatch_ARGS=--only-sync-always
#   make bench BENCHES=cold_start cold_start_ARGS="--events 1000000"
BENCHES ?= replay ic_latency dispatch cold_start sse_latency hf_overhead datasets placement \
	openai_limits intervals pruning
openai_limits_ARGS ?= --fleet

bench: install
	@set -e; $(foreach b,$(BENCHES),echo "== bench/$(b).py $($(b)_ARGS)"; \
		$(BIN)/python bench/$(b).py $($(b)_ARGS);)

# a local cluster in the foreground (Ctrl-C stops it); `inferno up --help` for the options
up: $(BASE_STAMP)
	$(BIN)/inferno up

# a throwaway cluster runs examples/arith.yaml, stops the worst pipeline, clones the best
demo: $(BASE_STAMP)
	$(BIN)/inferno demo

# removes everything the commands above create, the virtual environment included
clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache .mypy_cache .hypothesis bench/out
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -prune \
		-exec rm -rf {} +
