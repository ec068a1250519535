# gatewayd: two commands on a fresh machine, `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
CONFIG ?= etc/gatewayd.yaml
PLUGIN_CONFIG ?= etc/gatewayd_plugins.yaml

.PHONY: run test unit integration bench protos lint clean

$(STAMP): setup.cfg pyproject.toml
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
	  echo "warning: chromium missing (status page tests need it)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q --config-settings editable_mode=compat -e '.[test]'
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/twistd -n gatewayd --config $(CONFIG) --plugin-config $(PLUGIN_CONFIG)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile tests

unit: $(STAMP)
	$(PY) -m pytest -n 2 tests/unit

integration: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile tests/integration

bench: $(STAMP)
	$(PY) tests/bench/run_bench.py $(BENCH_ARGS)

protos: $(STAMP)
	$(PIP) install -q grpcio-tools==1.85.1
	$(PY) protos/generate.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
