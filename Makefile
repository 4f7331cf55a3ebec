# elvisor: `make demo` boots the demo, `make test` runs every test (in the lab where needed).
# Both install what they need first (Debian packages through apt, Python packages into .venv).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: all setup host-packages demo test lint format clean

all: test

host-packages:
	@tools/setup-host

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

setup: host-packages $(VENV)/.installed

demo: setup
	@tools/demo

test: setup
	@tools/run-tests

lint: setup
	$(BIN)/ruff check src tests tools
	$(BIN)/ruff format --check src tests tools
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format src tests tools
	$(BIN)/ruff check --fix src tests tools

clean:
	rm -rf build $(VENV) .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
