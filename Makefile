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

# The dashboard's tests drive a real headless Chromium: Debian's package, installed when missing
# (needs root or password-less sudo; if that fails, the dashboard tests fail and say so).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
browser:
	@command -v "$${CHROMIUM:-chromium}" >/dev/null || { \
	  echo "make browser: installing Debian's chromium for the dashboard tests"; \
	  log=$$($(SUDO) apt-get update -qq 2>&1 && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    NEEDRESTART_SUSPEND=1 apt-get install -y -qq chromium 2>&1) || { echo "$$log"; false; }; \
	} || echo "make browser: could not install chromium; the dashboard tests will fail"

serve: $(STAMP)
	$(BIN)/comfyfleet serve $(ARGS)

# PostgreSQL: the one at COMFYFLEET_TEST_POSTGRES if it answers, else the tests start their own.
test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(ARGS)
