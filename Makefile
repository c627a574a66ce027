# The quickstart is two commands: `make demo` and `make test`. Both create the virtualenv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test test-fast chaos bench bench-poller bench-receiver lint format validate-compose validate-deploy docs clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "pwasync needs Python 3.11 or newer (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pwasync demo

# Two parts (docs/tests.md): the tests that may share the machine, on two xdist workers (the
# suite mostly waits on subprocesses and sockets), then the `serial` ones alone. Both parts run
# whatever the first's result; the target fails if either failed.
test: $(STAMP)
	status=0; \
	$(BIN)/pytest -n 2 --dist loadgroup -m "not chaos and not serial" || status=$$?; \
	$(BIN)/pytest -m "serial and not chaos" || status=$$?; \
	exit $$status

# Unit tests only: no broker, no Redis, no sandbox.
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit

# Poller: requests and seconds of a first full sync and of incremental syncs (100 x 100 tasks).
bench-poller: $(STAMP)
	$(BIN)/python bench/poller.py

# Writer benchmarks against the sandbox at 100 ms Graph latency (needs RabbitMQ and Redis).
bench: $(STAMP)
	$(BIN)/python bench/writer.py
	$(BIN)/python bench/receiver.py

# Publish -> event in Outlook through the publish receiver (p50/p95 over 20 publishes).
bench-receiver: $(STAMP)
	$(BIN)/python bench/receiver.py

# The fault suite (docs/tests.md): every fault run, the long ones of issue 5's volumes too
# (marker `chaos`, left out of `make test`), then the table of each run's end state.
chaos: $(STAMP)
	$(BIN)/pytest tests/chaos -m "" -p no:cacheprovider

# The Kubernetes manifests (offline schemas, KEDA's CRDs in the repository), compose's secrets,
# the alert rules (promtool check and test) and the dashboard. Also part of `make test`.
validate-deploy: $(STAMP)
	$(BIN)/pytest tests/deploy

# The settings table of docs/configuration.md, from common/settings.py's field descriptions
# (tests/unit/test_settings_doc.py fails when they differ).
docs: $(STAMP)
	$(BIN)/python -m common.settings_doc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .demo .sandbox .pytest_cache .ruff_cache
