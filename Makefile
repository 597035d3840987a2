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

.PHONY: setup serve test browser
setup: $(STAMP)

# The dashboard's tests drive a real headless Chromium (Debian's package; needs root or sudo).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

serve: $(STAMP)
	$(BIN)/comfyfleet serve $(ARGS)

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(ARGS)
