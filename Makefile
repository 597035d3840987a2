# Two commands do everything on a fresh machine:
#   make serve   set up, then start the gateway (SQLite under ./.comfyfleet)
#   make test    set up, then run ruff and the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

.PHONY: setup serve test bench
setup: $(STAMP)

serve: $(STAMP)
	$(BIN)/comfyfleet serve $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(ARGS)
