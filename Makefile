# Two commands: `make run` (app with demo data on SQLite, on PORT, default 5000, and one
# `flask worker`) and `make test`
# (lint, then the whole suite on SQLite and PostgreSQL, browser tests included). Both set
# everything up from a machine with only Python 3.11+. `make test-fast` is the quick tier.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app webapp
PORT ?= 5000
export FLASK_APP := webapp

.PHONY: run test test-fast install lint bench bench-quick wrk soak clean

# Two stamps: what running needs (`make run`), and the developer tools on top (tests, lint).
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.dev

instance/config.py:
	mkdir -p instance
	$(BIN)/python -c "import secrets; print('# Local settings (git-ignored).\nSECRET_KEY = %r\n# Served over plain http on 127.0.0.1 by make run.\nSESSION_COOKIE_SECURE = False' % secrets.token_hex(32))" > $@

run: $(VENV)/.runtime instance/config.py
	$(FLASK) db upgrade
	$(FLASK) demo seed --if-empty
	$(FLASK) demo users
	@# The app and one `flask worker` (webhooks, credit expiry) together: one Ctrl-C stops both
	@# (the worker finishes the delivery in hand, then exits).
	@$(FLASK) worker & worker=$$!; \
	trap 'kill -TERM $$worker 2>/dev/null; wait $$worker' EXIT; \
	trap 'exit 130' INT TERM; \
	$(BIN)/gunicorn --bind 127.0.0.1:$(PORT) --workers 2 --access-logfile - 'webapp:create_app()'

test: lint
	bash .ci/ensure-services.sh
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# SQLite only, no browser, nothing marked slow: the tier to run while working (under 90 s here).
test-fast: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -k "not postgresql" \
		-m "not browser and not slow" $(PYTEST_ARGS)

# A bounded load test on a real gunicorn, SQLite then PostgreSQL, SOAK_MINUTES each (default 1):
# prints what was sent, acknowledged and stored, and fails on any difference or ledger violation.
SOAK_MINUTES ?= 1
export SOAK_MINUTES
soak: install
	bash .ci/ensure-services.sh
	$(BIN)/python scripts/soak.py

# mypy takes its files and strictness from [tool.mypy] in pyproject.toml.
lint: install
	$(BIN)/ruff check webapp tests bench scripts
	$(BIN)/ruff format --check webapp tests bench scripts
	$(BIN)/mypy

# Benchmarks (bench/run.py): gunicorn + wrk on SQLite and PostgreSQL (127.0.0.1:5432, database
# bench_sqlalchemy*, created and dropped by the script). Prints a markdown table and a summary line.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; \
		else echo "wrk is missing: run 'sudo apt-get install -y wrk'"; exit 1; fi; }

bench: install wrk
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-quick: install wrk
	$(BIN)/python bench/run.py --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
