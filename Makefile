# The two commands: `make lab` and `make test` (see README.md). Both set everything up first
# and are quick when it is already set up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.labkit-installed

# The kserve SDK pins cloudevents<2, which labkit cannot share a venv with: its REST client,
# tested against labkit's model server, lives in a venv of its own (also a benchmark peer).
KSERVE_PEER := bench/.venv/kserve/.installed

.PHONY: lab test unit labs browser chromium bench setup clean lint

setup: $(STAMP)

# Re-install only when the project's dependencies change. labkit's bytecode is compiled here, as
# pip compiles the dependencies': with PYTHONDONTWRITEBYTECODE set (CI images often set it) every
# replica, kernel and test worker would compile the modules it imports again.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]' > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	$(BIN)/python -m compileall -q labkit > /dev/null
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/labkit lab

# The peer venv needs the network, so only `make test` builds it; `make unit` runs without it
# (the one `peer` test then skips and says how to build it). Every core is busy throughout, so
# the order is what keeps the machine full: the browser tests (a long run, mostly waiting on live
# processes, timers and the page) start at once, beside the peer venv (pip, mostly disk and
# network) and `make lint`; then nbval; then the unit tests, once nbval and the peer venv are done.
# Each target's output is kept together (--output-sync); the system packages come first: one
# apt at a time.
test: $(STAMP) prometheus chromium
	$(MAKE) --no-print-directory -j3 --output-sync=target browser test-unit

.PHONY: test-labs test-unit
test-labs: lint
	$(MAKE) --no-print-directory labs
test-unit: test-labs $(KSERVE_PEER)
	$(MAKE) --no-print-directory unit

$(KSERVE_PEER): bench/bench_inference.py | $(STAMP)
	$(BIN)/python bench/bench_inference.py --setup-peers --peer kserve > $(VENV)/peer.log 2>&1 || (cat $(VENV)/peer.log; exit 1)
	touch $(KSERVE_PEER)

# Style and types, configured in pyproject.toml ([tool.ruff], [tool.mypy]): seconds (mypy's first
# run ~30 s of CPU, then incremental from .mypy_cache/). `ruff check --fix PATH` applies the safe fixes.
# mypy checks labkit and tests/, then tests/browser on its own: that folder is a pytest rootdir of
# its own (its conftest.py and driver modules are imported by bare name from it).
LINTED := labkit tests tools bench labs
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy
	MYPYPATH=tests/browser $(BIN)/mypy --no-warn-unused-configs tests/browser/*.py

# Three workers, a file each at a time (pytest-xdist): most tests wait on processes and sockets,
# so three beat two on 2 cores (measured: 5.5 min against 11.5 for one worker).
WORKERS := -n 3 --dist loadfile

unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -q $(WORKERS) tests --ignore=tests/browser

# nbval over every notebook; outputs are compared (sanitized for ports, addresses, timings).
labs: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -q $(WORKERS) --nbval --nbval-current-env \
		--nbval-cell-timeout=300 --nbval-sanitize-with tests/nbval_sanitize.cfg labs

# A lab's source is labs/NN_name.py (jupytext's percent format), paired with labs/NN_name.ipynb.
# `make notebook LAB=05` syncs the .py into the .ipynb (tools/sync_labs.py: cell ids from the
# id-NAME tags) and executes it in place with the kernel the notebook names, as nbval needs it
# committed; `make notebooks` does every lab, three at a time (as `make labs` runs them).
# Touching the .py last keeps it newer than the executed .ipynb, as jupytext expects of a pair.
NOTEBOOK_TIMEOUT := 400
LAB_SOURCES = $(wildcard labs/$(LAB)_*.py)
.PHONY: notebook notebooks
notebooks: LAB = [0-9][0-9]
notebook notebooks: $(STAMP)
	@test -n "$(LAB)" || { echo "usage: make notebook LAB=NN (e.g. LAB=05), or make notebooks" >&2; exit 2; }
	@test -n "$(LAB_SOURCES)" || { echo "no lab source labs/$(LAB)_*.py" >&2; exit 2; }
	$(BIN)/python tools/sync_labs.py $(LAB_SOURCES)
	printf '%s\n' $(LAB_SOURCES:.py=.ipynb) | xargs -P 3 -n 1 $(BIN)/jupyter nbconvert --to notebook \
		--execute --inplace --ExecutePreprocessor.timeout=$(NOTEBOOK_TIMEOUT)
	touch $(LAB_SOURCES)

# Every lab in JupyterLab in headless Chromium, as a student runs it (tests/browser/conftest.py).
# Screenshots and report.json (response times) go to .browser-shots/.
browser: $(STAMP) chromium
	$(BIN)/python -m pytest -p no:cacheprovider -q -rs tests/browser

# Debian's Chromium, installed when missing and we may (root on Debian); elsewhere the browser
# tests skip and say why. Never `playwright install`: it downloads a browser of its own.
chromium: $(STAMP)
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then \
		echo "installing Debian's chromium for the browser tests (log: $(VENV)/chromium.log)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
			> $(VENV)/chromium.log 2>&1 || (cat $(VENV)/chromium.log; exit 1); \
	fi

# Debian's Prometheus evaluates Flagger MetricTemplates in the tests (and lab 10 where it exists):
# labkit.flagger.prometheus runs its own server on a free port of 127.0.0.1, never a system one.
# Installed when missing and we may (root on Debian); elsewhere those tests skip and say why.
.PHONY: prometheus
unit labs: prometheus
prometheus: $(STAMP)
	@if ! command -v prometheus >/dev/null && [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then \
		echo "installing Debian's prometheus for the MetricTemplate tests (log: $(VENV)/prometheus.log)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) \
			> $(VENV)/prometheus.log 2>&1 || (cat $(VENV)/prometheus.log; exit 1); \
	fi

# hey is the HTTP load generator the model-server benchmark shares with its peers.
bench: $(STAMP)
	command -v hey >/dev/null || (apt-get update -qq && apt-get install -y -qq hey)
	$(BIN)/python bench/bench_inference.py --setup-peers
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) bench/.venv *.egg-info
