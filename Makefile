# The two commands of the README: `make run` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint redis-server clean

run: $(STAMP) redis-server
	@exec $(PY) -m notifier.dev

test: $(STAMP) redis-server
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "notifier needs Python 3.11 or newer: '$(PYTHON)' is missing or older; set PYTHON=python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# The embedded Redis is Debian's redis-server; REDIS_URL makes `make run` use another one instead.
redis-server:
	@if [ -n "$$REDIS_URL" ] && [ "$(MAKECMDGOALS)" = run ]; then exit 0; fi; \
	command -v redis-server >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's redis-server"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }; \
	else \
		echo "redis-server is missing: install it (sudo apt-get install redis-server) or set REDIS_URL"; exit 1; \
	fi

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
