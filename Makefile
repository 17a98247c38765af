# The two commands: `make lab` and `make test` (see README.md). Both set everything up first
# and are quick when it is already set up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.labkit-installed

# The kserve SDK pins cloudevents<2, which labkit cannot share a venv with: its REST client,
# tested against labkit's model server, lives in a venv of its own (also a benchmark peer).
KSERVE_PEER := bench/.venv/kserve/.installed

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

$(KSERVE_PEER): bench/bench_inference.py
	$(BIN)/python bench/bench_inference.py --setup-peers --peer kserve > $(VENV)/peer.log 2>&1 || (cat $(VENV)/peer.log; exit 1)
	touch $(KSERVE_PEER)

unit: $(STAMP) $(KSERVE_PEER)
	$(BIN)/python -m pytest -p no:cacheprovider -q tests

# nbval over every notebook; outputs are compared (sanitized for ports, addresses, timings).
labs: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -q --nbval --nbval-current-env \
		--nbval-cell-timeout=300 --nbval-sanitize-with tests/nbval_sanitize.cfg labs

# hey is the HTTP load generator the model-server benchmark shares with its peers.
bench: $(STAMP)
	command -v hey >/dev/null || (apt-get update -qq && apt-get install -y -qq hey)
	$(BIN)/python bench/bench_inference.py --setup-peers
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) bench/.venv *.egg-info
