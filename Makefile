# Two commands do all set-up on a fresh machine: `make demo` (main job on a synthetic cohort) and `make test`.
# Both create .venv and install the package into it on first use.
PYTHON ?= python3
VENV ?= .venv
# CPU/CUDA wheels of this pair lie on the development machines' disk; on your GPU machine pick the torch
# build for your CUDA (https://pytorch.org/get-started/locally/) with TORCH="torch==X.Y.Z".
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test

install: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wmhloc_run --demo --output wmhloc_demo

# Two pytest-xdist workers: the demo and the smoke cohort run train in the background from the first test
# (tests/conftest.py), the other tests run beside them, the tests of those runs last; tests sharing a
# module-scoped fixture or the session's nnU-Net folders stay on one worker (--dist loadgroup), in file order.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=30 -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder tests
