# `make demo` and `make test` do all the set-up themselves on a fresh machine: a .venv in this folder with
# the project and its dev extras installed. Nothing else is needed but python3 (>= 3.11).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench clean system-tools rules

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,peers,torch]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamal demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest

# Debian packages the tests use: prometheus (promtool, and a real server to scrape the service) and stunnel4
# (a TLS terminator in front of the embedded broker)
system-tools:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 \
	    || ! command -v stunnel4 >/dev/null 2>&1; then \
		echo "installing Debian's prometheus and stunnel4 packages"; \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y \
		    --no-install-recommends prometheus stunnel4; \
	fi

rules: system-tools
	promtool check rules deploy/prometheus/rules/*.yaml
	promtool test rules deploy/prometheus/tests/*.yaml

test: lint typecheck rules unit

bench: $(STAMP)
	$(BIN)/python scripts/bench_throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache demo-output
