# binance-lakehouse: `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.8
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: install run test lint serve docs dq-report dashboard bench lock browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The lock pins every transitive dependency; the stamp makes a re-install cheap when nothing changed.
# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set (as on these machines) every
# dbt, GE and Prefect process would otherwise recompile its imports, about 3-4 s each.
$(VENV)/.installed: requirements.lock pyproject.toml Makefile $(UV)
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@# Data Docs' scripts and styles come from npm once, at install, so reports render offline.
	$(BIN)/python -c "from flows.data_docs import vendor_assets; vendor_assets()"
	touch $@

install: $(VENV)/.installed

lock: $(UV)
	$(UV) pip compile --quiet pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

# Debian's chromium for the browser tests (Playwright cannot download its own here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

run: install
	$(BIN)/lakehouse run

lint: install
	$(BIN)/ruff check flows dashboards expectations tests bench
	$(BIN)/ruff format --check flows dashboards expectations tests bench
	cd dbt_project && ../$(BIN)/sqlfluff lint models analyses macros tests --processes 2

test: install browser lint
	$(BIN)/pytest -q -p no:cacheprovider

serve: install
	$(BIN)/lakehouse serve

docs: install
	$(BIN)/lakehouse docs

dq-report: install
	$(BIN)/lakehouse dq-report

dashboard: install
	$(BIN)/lakehouse dashboard

bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf lake/landing lake/raw lake/quarantine lake/warehouse lake/marts
