# Pushwarden developer loop. `make run` and `make test` do all set-up on a fresh machine
# with python3 and make: both depend on `install`, which builds .venv from constraints.txt.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-$(shell cat constraints.txt requirements.in libs/*/pyproject.toml services/*/pyproject.toml | cksum | cut -d' ' -f1)
PG_URL ?= $(or $(PUSHWARDEN_TEST_PG_URL),postgresql+psycopg://postgres@127.0.0.1:5432/test)

.PHONY: install lock run demo test test-pg protos protos-check proto-lint buf-curl-check lint bench compose-check config-table clean

install: $(VENV_STAMP)

$(VENV_STAMP):
	@test -x $(PY) || python3 -m venv .venv
	@$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt uv
	@$(PY) -m uv pip install -q --python $(PY) -c constraints.txt -r requirements.in
	@rm -f .venv/.installed-* && touch $@

lock:
	$(PY) -m uv pip compile requirements.in -o constraints.txt --no-header --no-annotate
	sed -i '/^-e /d' constraints.txt

# ---- run -------------------------------------------------------------------------------
# One Python supervisor runs the four services (SQLite under var/); make stays its parent.
run: install
	@$(PY) -m pushwarden.runtime.supervisor

# One simulated day of a shop app on the whole platform (sandbox included, SQLite in a
# temporary directory, the runtime's test clock): a report and var/demo/demo-chart.png.
DEMO_ARGS ?=
demo: install
	@$(PY) tools/demo.py $(DEMO_ARGS)

# ---- tests -----------------------------------------------------------------------------
PYTEST := $(PY) -m pytest
test: install
	@$(PYTEST) -q

# The storage and service suites again, each test on a throwaway PostgreSQL database.
test-pg: install
	@PUSHWARDEN_TEST_DB=postgres PUSHWARDEN_TEST_PG_URL=$(PG_URL) $(PYTEST) -q -m storage

# ---- contracts -------------------------------------------------------------------------
protos: install
	@$(PY) scripts/gen_protos.py

protos-check: install
	@$(PY) scripts/gen_protos.py --check

node_modules/.installed: package.json package-lock.json
	@npm ci --silent --no-audit --no-fund
	@touch $@

# buf comes pinned from the npm registry; only these targets (and buf curl) need Node.js.
# The v1 contracts are frozen: PROTO_IMAGE is the buf image of the accepted contracts
# (schema only, without comments), and every change must pass `buf breaking` against it.
PROTO_IMAGE := protos/v1.binpb
BUF := node_modules/.bin/buf
proto-lint: node_modules/.installed
	@$(BUF) lint protos
	@$(BUF) breaking protos --against $(PROTO_IMAGE)
	@$(BUF) build protos --exclude-source-info -o - | cmp -s - $(PROTO_IMAGE) \
	  || { echo "$(PROTO_IMAGE) is stale: run 'make proto-image' and commit it" >&2; exit 1; }

# After an additive change: refresh the image. Refused when the change is breaking, so a
# refresh can never launder a breaking change into the baseline.
.PHONY: proto-image
proto-image: node_modules/.installed
	@if [ -f $(PROTO_IMAGE) ]; then $(BUF) breaking protos --against $(PROTO_IMAGE); fi
	@$(BUF) build protos --exclude-source-info -o $(PROTO_IMAGE)

# Starts the platform and reaches every service with `buf curl` through reflection.
buf-curl-check: install node_modules/.installed
	@$(PY) tools/buf_curl_check.py

# ---- quality ---------------------------------------------------------------------------
LINT_PATHS := libs/payload libs/policy libs/runtime libs/sandbox libs/cli libs/contracts/tests services tests bench tools scripts
lint: install
	@$(PY) -m ruff check $(LINT_PATHS)
	@$(PY) -m ruff format --check $(LINT_PATHS)
	@$(PY) -m mypy $(LINT_PATHS)

compose-check: install
	@$(PY) tools/compose_check.py docker-compose.yml

# Regenerates the README's configuration table from the config classes.
config-table: install
	@$(PY) tools/config_table.py --write README.md

# ---- benchmarks ------------------------------------------------------------------------
# Every script under bench/ prints a table and `BENCH {...}` lines; BENCH_ARGS=--quick for a short run.
# Modules named _*.py are shared helpers, not benchmarks.
BENCH_ARGS ?=
bench: install
	@set -e; for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b $(BENCH_ARGS); done

clean:
	rm -rf .venv var node_modules
