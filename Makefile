# The two commands: `make run` serves Crucible, `make test` runs the whole suite.
# Both install and start what they need first (scripts/setup.sh), idempotently.
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST_WORKERS ?= 2

.PHONY: run test setup lint check pytest sandbox-runc sandbox-pool faults bench image

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

# The whole suite (apps/, crucible/, tests/) in parallel with sandboxes under gVisor (the default),
# the sandbox and adversarial tests again under runc, and again through warm pools, then the fault suite. --durations shows where
# the time goes (keep `make test` well under 40 minutes on the 2-core development machine).
pytest:
	CRUCIBLE_ENV=test SANDBOX_RUNTIME=runsc .venv/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not faults" --durations=10
	$(MAKE) sandbox-runc
	$(MAKE) sandbox-pool
	$(MAKE) faults

sandbox-runc:
	CRUCIBLE_ENV=test SANDBOX_RUNTIME=runc .venv/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not faults" -q apps/sandboxing apps/sessions

# The adversarial tests once more, every run taking its sandbox from a warm pool.
sandbox-pool:
	CRUCIBLE_ENV=test SANDBOX_TEST_POOL=1 .venv/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not faults" -q apps/sandboxing/tests/test_adversarial_*.py apps/sandboxing/tests/test_runner_contract.py

# The fault-injection suite: serially, after the parallel suite, on private PostgreSQL/Redis/dockerd.
faults:
	CRUCIBLE_ENV=test DATABASE_TEST_NAME=test_crucible_faults .venv/bin/pytest tests/faults -m faults -q -p no:xdist

test: setup lint check pytest

# The platform image (Dockerfile) with no container registry: a Debian base debootstrapped from the
# host's mirror, a wheelhouse fetched by the host's pip, then `docker build` (deploy/build_image.py).
# Each step is skipped when its result exists. IMAGE_TAG names the result (default crucible:latest).
IMAGE_TAG ?= crucible:latest
image:
	$(PY) deploy/build_image.py --tag $(IMAGE_TAG)
