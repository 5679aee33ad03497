# The two commands of the README: `make run` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench redis-server chromium clean

run: $(STAMP) redis-server
	@exec $(PY) -m notifier.dev

# The live-path tests once more on Tornado's stock WebSocket API (web/transport.py).
STOCK_TESTS := tests/test_ws.py tests/test_delivery.py tests/test_resume.py \
	tests/test_slow_client.py tests/test_ws_heartbeat.py tests/test_faults.py \
	tests/test_bounded_live.py tests/test_half_open.py

test: $(STAMP) redis-server chromium
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest
	WS_TRANSPORT=stock $(PY) -m pytest -q $(STOCK_TESTS)

# notifier's web process against the Node ws peer (bench/suite.py), issue 19's scenarios
# included (26 minutes on this loaded 2-core machine). bench/many_sockets.py runs apart.
bench: $(STAMP) redis-server
	$(PY) -m pip install --quiet -e '.[bench]'
	cd bench/peers/node-ws && npm ci --no-audit --no-fund --loglevel=error
	taskset -c 1 $(PY) bench/suite.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
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

# The browser tests drive Debian's chromium; as root, install it when it is missing.
chromium:
	@command -v chromium >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium could not be installed: the browser tests will be skipped"; \
	else \
		echo "chromium is missing (sudo apt-get install chromium): the browser tests will be skipped"; \
	fi

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
