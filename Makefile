# Kakitome — the two commands that matter: `make run` and `make test`.
#
#   make run        create .venv, install, start the service on SQLite in ./var/
#   make test       install test deps (+ Debian peers when root), ruff, mypy --strict, pytest
#   make lint       ruff check
#   make typecheck  mypy --strict
#   make bench      the delivery benchmark (Postfix side for now; needs root and postfix)
#
# Installs are stamped in .venv/ and redone only when pyproject.toml changes.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

# The interpreter that creates the venv: python3 when it is 3.11 or newer, else python3.11.
PYTHON ?= $(shell \
  if command -v python3 >/dev/null 2>&1 && \
     python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
    echo python3; \
  else \
    for p in python3.13 python3.12 python3.11; do \
      if command -v $$p >/dev/null 2>&1; then echo $$p; break; fi; \
    done; \
  fi)

LINT_PATHS  := src tests bench scripts
PYTEST_ARGS ?=
# pytest-xdist workers (0: one process). Tests marked `heavy` run one at a time in one of
# them (tests/conftest.py); docs/TESTING.md has the durations.
PYTEST_WORKERS ?= 3
BENCH_ARGS  ?=

.PHONY: help run test lint typecheck pytest peers bench clean

help:
	@sed -n '3,9p' Makefile | sed 's/^# \{0,1\}//'

$(PY):
	@if [ -z "$(PYTHON)" ]; then echo "Python >= 3.11 is needed (python3 or python3.11)" >&2; exit 1; fi
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.stamp-install: pyproject.toml | $(PY)
	$(PIP) install -e .
	@touch $@

$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(PIP) install -e '.[test]'
	@touch $@ $(VENV)/.stamp-install

# Ports below 1024 need root: an unprivileged `make run` puts the SMTP listeners on
# 2525 (MX), 2587 (submission) and 2465 (implicit TLS) unless they are set already.
run: $(VENV)/.stamp-install
	@mkdir -p var
	@if [ "$$(id -u)" -ne 0 ]; then \
	  export KAKITOME_INBOUND__MX_PORT=$${KAKITOME_INBOUND__MX_PORT:-2525}; \
	  export KAKITOME_INBOUND__SUBMISSION_PORT=$${KAKITOME_INBOUND__SUBMISSION_PORT:-2587}; \
	  export KAKITOME_INBOUND__SUBMISSIONS_PORT=$${KAKITOME_INBOUND__SUBMISSIONS_PORT:-2465}; \
	  echo "not root: SMTP listeners on 2525, 2587 and 2465"; \
	fi; \
	exec $(VENV)/bin/kakitome serve

peers:
	@bash scripts/install-peers

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/lint-imports

typecheck: $(VENV)/.stamp-test
	$(VENV)/bin/mypy --strict
	$(VENV)/bin/mypy --strict bench

# pytest's exit status 5 means "no tests collected": said out loud, not a failure.
pytest: $(VENV)/.stamp-test
	@mkdir -p test-artifacts
	@set +e; $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=30 \
	  --junitxml=test-artifacts/junit.xml $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests were collected (exit 5)"; exit 0; fi; \
	exit $$rc

test: peers lint typecheck pytest

bench: $(VENV)/.stamp-test
	$(PY) -m bench.postfix_relay $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
