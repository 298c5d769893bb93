# Two commands: `make run` (app with demo data on SQLite) and `make test` (whole suite, SQLite
# and PostgreSQL). Both set everything up from a machine with only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app webapp
export FLASK_APP := webapp

.PHONY: run test install lint bench bench-quick wrk soak clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

instance/config.py:
	mkdir -p instance
	$(BIN)/python -c "import secrets; print('# Local settings (git-ignored).\nSECRET_KEY = %r\n# Served over plain http on 127.0.0.1 by make run.\nSESSION_COOKIE_SECURE = False' % secrets.token_hex(32))" > $@

run: install instance/config.py
	$(FLASK) db upgrade
	$(FLASK) demo seed --if-empty
	$(FLASK) demo users
	$(BIN)/gunicorn --bind 127.0.0.1:5000 --workers 2 --access-logfile - 'webapp:create_app()'

test: install
	bash .ci/ensure-services.sh
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# A bounded load test on a real gunicorn, SQLite then PostgreSQL, SOAK_MINUTES each (default 1):
# prints what was sent, acknowledged and stored, and fails on any difference or ledger violation.
SOAK_MINUTES ?= 1
export SOAK_MINUTES
soak: install
	bash .ci/ensure-services.sh
	$(BIN)/python scripts/soak.py

lint: install
	$(BIN)/ruff check webapp tests bench scripts

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
