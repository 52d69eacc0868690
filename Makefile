# The two commands: `make run` serves Crucible, `make test` runs the whole suite.
# Both install and start what they need first (scripts/setup.sh), idempotently.
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST_WORKERS ?= 2

.PHONY: run test setup lint check pytest bench

setup:
	bash scripts/setup.sh

run: setup
	@echo "Crucible on http://127.0.0.1:8000 (Ctrl-C stops everything)"
	.venv/bin/honcho start -f Procfile

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

check:
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

pytest:
	CRUCIBLE_ENV=test .venv/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile

test: setup lint check pytest
