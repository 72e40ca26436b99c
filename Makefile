# Pushwarden developer loop. `make run` and `make test` do all set-up on a fresh machine
# with python3 and make: both depend on `install`, which builds .venv from constraints.txt.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-$(shell cat constraints.txt requirements.in libs/*/pyproject.toml services/*/pyproject.toml | cksum | cut -d' ' -f1)
PG_URL ?= $(or $(PUSHWARDEN_TEST_PG_URL),postgresql+psycopg://postgres@127.0.0.1:5432/test)

.PHONY: install lock run test test-pg protos protos-check proto-lint lint bench compose-check clean

install: $(VENV_STAMP)

$(VENV_STAMP):
	@test -x $(PY) || python3 -m venv .venv
	@$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt uv
	@$(PY) -m uv pip install -q --python $(PY) -c constraints.txt -r requirements.in
	@rm -f .venv/.installed-* && touch $@

lock:
	$(PY) -m uv pip compile requirements.in -o constraints.txt --no-header --no-annotate
	sed -i '/^-e /d' constraints.txt
