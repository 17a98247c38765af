# The two commands: `make lab` and `make test` (see README.md). Both set everything up first
# and are quick when it is already set up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.labkit-installed

.PHONY: lab test unit labs bench setup clean

setup: $(STAMP)

# Re-install only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]' > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/labkit lab

test: unit labs

unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -q tests

# nbval over every notebook; outputs are compared (sanitized for ports, addresses, timings).
labs: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -q --nbval --nbval-current-env \
		--nbval-cell-timeout=300 --nbval-sanitize-with tests/nbval_sanitize.cfg labs

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) *.egg-info
